"""A learner's image (built from their ``Dockerfile`` by :mod:`provisioning.hosted.docker_build`)
and how a :class:`provisioning.sandbox.docker_box.DockerBox` runs its supervisor inside it.

One image per submission: tagged ``cruscible/submission:<sha256 of the workdir>[:16]`` and
labelled ``cruscible.submission`` (the submission's workdir, a host path) and
``cruscible.expires``. The docker box of that workdir runs from it; :func:`sweep` removes an
image once its workdir is gone (the submission was cleaned up) or it has expired, unless a
container still uses it.

The supervisor (:mod:`provisioning.sandbox.boxinit`) is this host's interpreter, not the
image's: the staged interpreter is mounted at ``/box/python``, the host's ``/usr`` (and any
real top-level library directory) under ``/box/host``, and the host's ELF loader is run
explicitly with ``--library-path`` (ld.so(8): https://man7.org/linux/man-pages/man8/ld.so.8.html)
so that nothing of the image is loaded into it: every variable of the image's environment is
emptied for the supervisor, and an empty file hides ``/etc/ld.so.preload``. The learner's
processes get the image's environment and run in its ``WORKDIR`` with its ``/bin/sh``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shlex
import struct
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import docker
from docker.errors import APIError, NotFound

from provisioning.sandbox import docker_image, host
from provisioning.sandbox.spec import SandboxError

REPO = "cruscible/submission"
LABEL_SUBMISSION = "cruscible.submission"
LABEL_EXPIRES = "cruscible.expires"
EXPIRY_S = 24 * 3600.0
IMAGE_COMMAND_VAR = "CRUSCIBLE_IMAGE_COMMAND"
PYTHON_AT = "/box/python"
HOST_AT = "/box/host"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Read by the loader or the C library before any code of ours runs (ld.so(8), environ(7)).
LOADER_VARS = (
    "LD_PRELOAD",
    "LD_AUDIT",
    "LD_LIBRARY_PATH",
    "LD_DEBUG",
    "LD_DEBUG_OUTPUT",
    "LD_PROFILE",
    "GLIBC_TUNABLES",
    "GCONV_PATH",
    "LOCPATH",
    "MALLOC_CHECK_",
    "HOSTALIASES",
    "RES_OPTIONS",
    "LOCALDOMAIN",
    "NLSPATH",
    "TZDIR",
)


def tag_for(workdir: Path) -> str:
    """The image tag of the submission whose sources are ``workdir``."""
    digest = hashlib.sha256(str(workdir.resolve()).encode()).hexdigest()[:16]
    return f"{REPO}:{digest}"


def labels_for(workdir: Path, expiry_s: float = EXPIRY_S) -> dict[str, str]:
    """The labels a submission's image carries (see the module docstring)."""
    expires = datetime.now(UTC) + timedelta(seconds=expiry_s)
    return {LABEL_SUBMISSION: str(workdir.resolve()), LABEL_EXPIRES: expires.isoformat()}


@dataclass(frozen=True)
class LearnerImage:
    """A built image: ``ref`` (its id), ``env`` (its ``ENV``), ``command`` (``ENTRYPOINT`` then
    ``CMD``; empty when it has neither), ``workdir`` (its ``WORKDIR``, ``/`` when unset) and
    ``volumes`` (its ``VOLUME`` paths: the box mounts a capped tmpfs on each, or the engine
    would make host volumes outside every cap)."""

    ref: str
    env: dict[str, str]
    command: tuple[str, ...]
    workdir: str
    volumes: tuple[str, ...] = ()

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> LearnerImage:
        """From ``docker image inspect`` (``attrs`` of the SDK's image)."""
        config = attrs.get("Config") or {}
        env = dict(item.partition("=")[::2] for item in config.get("Env") or [])
        command = (*(config.get("Entrypoint") or ()), *(config.get("Cmd") or ()))
        volumes = tuple(sorted(config.get("Volumes") or {}))
        return cls(attrs["Id"], env, tuple(command), config.get("WorkingDir") or "/", volumes)

    def process_env(self, base: dict[str, str]) -> dict[str, str]:
        """A process's environment: ``HOME``/``TMPDIR`` ``/tmp``, the image's ``ENV``, then
        ``base`` (the bundle, ``PORT``), and the image's command as
        ``$CRUSCIBLE_IMAGE_COMMAND`` (shell-quoted)."""
        env = {"PATH": DEFAULT_PATH, "HOME": "/tmp", "TMPDIR": "/tmp", **self.env, **base}
        env[IMAGE_COMMAND_VAR] = shlex.join(self.command)
        return env

    def wrap(self, command: str) -> str:
        """``command`` run from the image's ``WORKDIR`` (the supervisor starts it in ``/app``)."""
        return f"cd {shlex.quote(self.workdir)} || exit 126\n{command}"

    def supervisor_env(self) -> dict[str, str]:
        """The container's environment (the supervisor's only): the image's variables and the
        loader's emptied, so that none of them reaches the host interpreter."""
        env = dict.fromkeys((*self.env, *LOADER_VARS), "")
        env.update({"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})
        return env


def find(client: docker.DockerClient, workdir: Path) -> LearnerImage | None:
    """The image built for ``workdir``, or ``None`` (a Python submission). Blocking."""
    try:
        image = client.images.get(tag_for(workdir))
    except NotFound:
        return None
    if image.labels.get(LABEL_SUBMISSION) != str(workdir.resolve()):
        return None
    return LearnerImage.from_attrs(image.attrs)


def remove(client: docker.DockerClient, workdir: Path) -> None:
    """Remove ``workdir``'s image, if any and unused. Blocking."""
    with contextlib.suppress(NotFound, APIError):
        client.images.remove(tag_for(workdir), noprune=False)


def sweep(client: docker.DockerClient, now: datetime | None = None) -> int:
    """Remove the submissions' images whose workdir is gone or whose expiry has passed (an
    image a container still uses stays); how many. Blocking."""
    now = now or datetime.now(UTC)
    removed = 0
    for image in client.images.list(filters={"label": LABEL_SUBMISSION}):
        labels = image.labels
        try:
            expired = datetime.fromisoformat(labels.get(LABEL_EXPIRES, "")) <= now
        except ValueError:
            expired = True
        if expired or not Path(labels.get(LABEL_SUBMISSION, "")).is_dir():
            with contextlib.suppress(NotFound, APIError):
                client.images.remove(image.id, noprune=False)
                removed += 1
    return removed


# ------------------------------------------------------------------ the supervisor's runtime


def _elf_interpreter(path: str) -> str:
    """The ``PT_INTERP`` of the 64-bit little-endian ELF file ``path`` (its loader).

    Raises :class:`SandboxError` for another kind of file."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:6] != b"\x7fELF\x02\x01":
            raise SandboxError(f"{path} is not a 64-bit little-endian ELF file")
        (phoff,) = struct.unpack_from("<Q", head, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
        for i in range(phnum):
            f.seek(phoff + i * phentsize)
            kind, _flags, offset, _vaddr, _paddr, size = struct.unpack("<IIQQQQ", f.read(40))
            if kind == 3:  # PT_INTERP
                f.seek(offset)
                return f.read(size).rstrip(b"\0").decode()
    raise SandboxError(f"{path} names no loader (a static executable)")


@dataclass(frozen=True)
class HostRuntime:
    """How to start the host interpreter in any image: ``argv`` (the loader, its library
    path, the interpreter), and ``volumes`` (host path -> ``{"bind", "mode"}``)."""

    argv: tuple[str, ...]
    volumes: dict[str, dict[str, str]]


def _inside(path: str, interp: host.Interpreter, tops: dict[str, str | None]) -> str | None:
    """Where the host path ``path`` appears inside the box, or ``None``."""
    real = os.path.realpath(path)
    for base in (str(interp.source), str(interp.prefix)):
        if real == base or real.startswith(base + "/"):
            return PYTHON_AT + real[len(base) :]
    top = real.split("/")[1] if real.count("/") > 1 else ""
    if top == "usr" or (top in tops and tops[top] is None):
        return HOST_AT + real
    return None


@cache
def host_runtime(interp: host.Interpreter) -> HostRuntime:
    """The :class:`HostRuntime` of ``interp`` on this host (``ldd`` names the directories of
    the libraries it and its extension modules need). Raises :class:`SandboxError` when one
    of them lies outside ``/usr``, the library directories and the interpreter."""
    tops = docker_image.host_tops()
    version = Path(interp.executable).name
    exe = str(interp.source / "bin" / version)
    modules = sorted((interp.source / "lib" / version / "lib-dynload").glob("*.so"))
    done = subprocess.run(
        ["ldd", exe, *map(str, modules)], capture_output=True, text=True, timeout=60
    )
    dirs: list[str] = [f"{PYTHON_AT}/lib"]
    for match in re.finditer(r"=>\s*(/\S+)\s+\(0x", done.stdout):
        where = _inside(os.path.dirname(match.group(1)), interp, tops)
        if where is None:
            raise SandboxError(f"{match.group(1)} (needed by the interpreter) cannot be mounted")
        if where not in dirs:
            dirs.append(where)
    loader = _inside(_elf_interpreter(exe), interp, tops)
    if loader is None:
        raise SandboxError(f"the loader of {exe} cannot be mounted")
    volumes = {
        "/usr": {"bind": f"{HOST_AT}/usr", "mode": "ro"},
        str(interp.source): {"bind": PYTHON_AT, "mode": "ro"},
    }
    for top, target in tops.items():
        if target is None:
            volumes[f"/{top}"] = {"bind": f"{HOST_AT}/{top}", "mode": "ro"}
    argv = (loader, "--library-path", ":".join(dirs), f"{PYTHON_AT}/bin/{version}")
    return HostRuntime(argv, volumes)
