"""A base image a learner's Dockerfile can start FROM, built here without a registry.

``FROM scratch`` with this host's Python laid out as the official images have it (the
interpreter in ``/usr/local``), ``dash`` as ``/bin/sh``, and the system libraries ``ldd``
names for them and for the extension modules of the packages installed here (what a learner's
``pip install`` from wheels of those packages needs), at their host paths. Tagged by a hash of
its content: built once per engine.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import docker
from docker.errors import ImageNotFound

from provisioning.sandbox import host

REPO = "learner-base/python"
DOCKERFILE = "FROM scratch\nCOPY rootfs/ /\nENV PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8\n"


def _libraries(files: list[Path]) -> set[Path]:
    """The system libraries (under /lib*, /usr/lib*) and libpython ``ldd`` names for ``files``."""
    out = subprocess.run(["ldd", *map(str, files)], capture_output=True, text=True).stdout
    found = {Path(m.group(1)) for m in re.finditer(r"(?:=>\s*)?(/\S+)\s+\(0x", out)}
    return {
        p
        for p in found
        if p.parts[1].startswith("lib")
        or p.parts[1:3] == ("usr", "lib")
        or p.name.startswith("libpython")
    }


def ensure_base(client: docker.DockerClient) -> str:
    """The tag of the base image, built when the engine lacks it. Blocking."""
    interp = host.interpreter()
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    packages = sorted(Path(sys.prefix).glob("lib/python*/site-packages/**/*.so"))
    seed = f"{DOCKERFILE}\0{interp.source}\0{sys.version}\0{shutil.which('dash')}\0{packages}\0libpython"
    ref = f"{REPO}:{hashlib.sha256(seed.encode()).hexdigest()[:16]}"
    try:
        client.images.get(ref)
        return ref
    except ImageNotFound:
        pass
    exe = interp.source / "bin" / version
    modules = sorted((interp.source / "lib" / version / "lib-dynload").glob("*.so"))
    dash = Path(shutil.which("dash") or "/bin/dash")
    with tempfile.TemporaryDirectory(prefix="learner-base-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        local = rootfs / "usr" / "local"
        (local / "bin").mkdir(parents=True)
        shutil.copy2(exe, local / "bin" / version)
        (local / "bin" / "python3").symlink_to(version)
        (local / "bin" / "python").symlink_to(version)
        shutil.copytree(interp.source / "lib" / version, local / "lib" / version, symlinks=True)
        (rootfs / "bin").mkdir()
        shutil.copy2(dash, rootfs / "bin" / "sh")
        multiarch = rootfs / "usr" / "lib" / "x86_64-linux-gnu"
        multiarch.mkdir(parents=True, exist_ok=True)
        for lib in _libraries([exe, *modules, dash, *packages]):
            if lib.name.startswith("libpython"):
                shutil.copy2(lib.resolve(), multiarch / lib.name)
                continue
            target = rootfs / str(lib).lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(lib.resolve(), target)
        for name in ("tmp", "etc", "proc", "dev", "sys"):
            (rootfs / name).mkdir(exist_ok=True)
        (rootfs / "tmp").chmod(0o1777)
        (Path(tmp) / "Dockerfile").write_text(DOCKERFILE)
        client.images.build(path=tmp, tag=ref, rm=True, forcerm=True, network_mode="none")
    return ref
