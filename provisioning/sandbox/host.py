"""What the host must provide for boxes: bubblewrap, util-linux tools, the sandbox user,
an interpreter the sandbox user can reach."""

from __future__ import annotations

import hashlib
import logging
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from provisioning.sandbox.spec import SandboxError
from provisioning.staging import exclusive, link_or_copy

log = logging.getLogger(__name__)

SANDBOX_USER = "cruscible-sandbox"
"""Runs everything inside boxes when we are root; distinct from the ``cruscible`` user that
runs the servers, so a box cannot read server data directories."""

TOOLS = {
    "bwrap": "bubblewrap is not installed: apt-get install bubblewrap",
    "setpriv": "setpriv is not installed: apt-get install util-linux",
    "prlimit": "prlimit is not installed: apt-get install util-linux",
}


def is_root() -> bool:
    return os.geteuid() == 0


def tool(name: str) -> str:
    """The path of a required host tool, or :class:`SandboxError` with the install hint."""
    found = shutil.which(name) or shutil.which(name, path="/usr/bin:/bin:/usr/sbin:/sbin")
    if found is None:
        raise SandboxError(TOOLS[name])
    return found


def missing() -> str | None:
    """Why boxes cannot run here (the first missing piece), or ``None``."""
    if not sys.platform.startswith("linux"):
        return f"sandboxes need Linux (namespaces, cgroups), this is {sys.platform}"
    for name in TOOLS:
        try:
            tool(name)
        except SandboxError as exc:
            return str(exc)
    try:
        limit = int(Path("/proc/sys/user/max_user_namespaces").read_text())
    except (OSError, ValueError):
        limit = 1
    if limit == 0:
        return "user namespaces are disabled: sysctl -w user.max_user_namespaces=10000"
    return None


@cache
def bwrap_supports(flag: str) -> bool:
    """Whether this bubblewrap knows ``flag`` (``--disable-userns`` came in 0.8.0)."""
    try:
        done = subprocess.run([tool("bwrap"), "--help"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return flag in done.stdout + done.stderr


@dataclass(frozen=True)
class User:
    """Who runs inside the box: the sandbox user when root, else ourselves."""

    name: str
    uid: int
    gid: int
    dropped: bool  # True: we drop from root to this user


def sandbox_user() -> User:
    """The sandbox user (created with ``useradd --system`` when root and missing)."""
    if not is_root():
        me = pwd.getpwuid(os.getuid())
        return User(me.pw_name, me.pw_uid, me.pw_gid, dropped=False)
    try:
        entry = pwd.getpwnam(SANDBOX_USER)
    except KeyError:
        log.info("creating system user %s to run sandboxed code", SANDBOX_USER)
        done = subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                SANDBOX_USER,
            ],
            capture_output=True,
            text=True,
        )
        try:
            entry = pwd.getpwnam(SANDBOX_USER)  # also covers a concurrent useradd
        except KeyError:
            raise SandboxError(
                f"cannot create system user {SANDBOX_USER!r}: {done.stderr.strip()}"
            ) from None
    return User(entry.pw_name, entry.pw_uid, entry.pw_gid, dropped=True)


def _world_reachable(path: Path) -> bool:
    """Every ancestor of ``path`` is searchable by others, and ``path`` readable."""
    for parent in reversed(path.parents):
        if not parent.stat().st_mode & 0o001:
            return False
    return bool(path.stat().st_mode & 0o004)


def _ignore(directory: str, names: list[str]) -> set[str]:
    return {n for n in names if n in ("site-packages", "__pycache__", "test", "idlelib")}


@dataclass(frozen=True)
class Interpreter:
    """The Python the box runs: ``source`` (host path to bind read-only) appears inside the
    box at ``prefix`` (the host's own ``sys.base_prefix``, so that its absolute RUNPATH keeps
    working); ``executable`` is the path inside the box."""

    source: Path
    prefix: Path
    executable: str


@cache
def interpreter() -> Interpreter:
    """This Python's base installation, staged (hard links, else copies; once per
    installation) where the sandbox user can reach it when it lives under a private
    directory such as a 0700 ``/root``. Its ``site-packages`` stays behind: boxes install
    their own packages in a venv."""
    prefix = Path(sys.base_prefix)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    executable = str(prefix / "bin" / version)
    if not is_root() or _world_reachable(prefix / "bin" / version):
        return Interpreter(prefix, prefix, executable)
    built = os.stat(os.path.realpath(executable)).st_mtime_ns
    tag = hashlib.sha256(f"{prefix}\0{sys.version}\0{built}".encode()).hexdigest()[:12]
    into = Path(tempfile.gettempdir()) / f"cruscible-python-{tag}"
    done = into / ".staged"
    if into.exists():
        # /tmp is shared: use a staged tree only if it is ours and nobody else may change it.
        info = into.lstat()
        if into.is_symlink() or info.st_uid != 0 or info.st_mode & 0o022:
            raise SandboxError(
                f"{into} exists but is not a root-owned directory closed to others; remove it"
            )
    if not done.exists():
        into.mkdir(mode=0o755, exist_ok=True)
        into.chmod(0o755)
        with exclusive(into):
            if not done.exists():  # or another process staged it while we waited
                _stage_python(prefix, version, into)
    return Interpreter(into, prefix, executable)


def _stage_python(prefix: Path, version: str, into: Path) -> None:
    log.info("staging %s for sandboxes at %s", prefix, into)
    (into / "bin").mkdir(mode=0o755, exist_ok=True)
    real = Path(os.path.realpath(prefix / "bin" / version))
    link_or_copy(str(real), str(into / "bin" / version))
    for alias in ("python3", "python"):
        if not os.path.lexists(into / "bin" / alias):
            os.symlink(version, into / "bin" / alias)
    lib = prefix / "lib"
    (into / "lib").mkdir(mode=0o755, exist_ok=True)
    for entry in lib.iterdir():
        if entry.name.startswith("libpython") and entry.is_file():
            link_or_copy(str(entry), str(into / "lib" / entry.name))
    shutil.copytree(
        lib / version,
        into / "lib" / version,
        ignore=_ignore,
        copy_function=link_or_copy,
        dirs_exist_ok=True,
        symlinks=True,
    )
    (into / "lib" / version / "site-packages").mkdir(mode=0o755, exist_ok=True)
    for root, dirs, _files in os.walk(into):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o755)
    (into / ".staged").write_text(str(prefix))
