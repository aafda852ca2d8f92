"""Server processes: spawn with a findable marker, signal their group, find them again."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from provisioning.local.users import RunAs

MARK_ENV = "CRUSCIBLE_ENV_ID"
MARK_DIR = "CRUSCIBLE_DATA_DIR"
MARK_RESOURCE = "CRUSCIBLE_RESOURCE"
_PASSED_ENV = ("PATH", "LANG", "LC_ALL", "TZ")
SERVER_BINARIES = frozenset({"postgres", "valkey-server", "weed", "nats-server"})


@dataclass(frozen=True)
class Marked:
    """A live process carrying our marker."""

    pid: int
    pgid: int
    env_id: str
    resource: str


def spawn(
    argv: list[str],
    *,
    cwd: Path,
    log_path: Path,
    data_dir: Path,
    env_id: str,
    resource: str,
    run_as: RunAs,
    extra_env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own session, output appended to ``log_path``."""
    env = {k: os.environ[k] for k in _PASSED_ENV if k in os.environ}
    env.update(extra_env or {})
    env.update({MARK_ENV: env_id, MARK_DIR: str(data_dir), MARK_RESOURCE: resource})
    with open(log_path, "ab") as log:
        run_as.own(log_path)
        return subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            user=run_as.uid,
            group=run_as.gid,
            extra_groups=[] if run_as.uid is not None else None,
            umask=0o077,
        )


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, process group, session) of ``pid``, or None if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[2]), int(fields[3])


def _state(pid: int) -> str | None:
    stat = _stat(pid)
    return stat[0] if stat else None


def _environ(pid: int) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read()
    except OSError:
        return {}
    out: dict[str, str] = {}
    if b"CRUSCIBLE_" not in raw:  # most processes: skip splitting
        return out
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep and key.startswith(b"CRUSCIBLE_"):
            out[key.decode()] = value.decode(errors="replace")
    return out


def _owner_by_cwd(pid: int, envs_dir: Path) -> tuple[str, str] | None:
    """(env id, resource) of a server binary working inside ``<envs_dir>/<env>/<resource>/``."""
    try:
        exe = os.readlink(f"/proc/{pid}/exe").removesuffix(" (deleted)")
        cwd = os.readlink(f"/proc/{pid}/cwd").removesuffix(" (deleted)")
    except OSError:
        return None
    if Path(exe).name not in SERVER_BINARIES:
        return None
    parts = Path(cwd).parts
    root = envs_dir.parts
    if len(parts) > len(root) + 1 and parts[: len(root)] == root:
        return parts[len(root)], parts[len(root) + 1]
    return None


def scan(data_dir: Path) -> list[Marked]:
    """Every live (non-zombie) process of an environment under ``data_dir``.

    A server is recognised by the marker in its environment, or — as servers such as
    Valkey and PostgreSQL overwrite that memory with their process title — by a
    working directory inside its resource directory; every other member of a
    recognised process's session belongs to the same resource.
    """
    wanted, envs_dir = str(data_dir), data_dir / "envs"
    live: dict[int, tuple[int, int]] = {}
    owners: dict[int, tuple[str, str]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        stat = _stat(pid)
        if stat is None or stat[0] == "Z":
            continue
        live[pid] = (stat[1], stat[2])
        env = _environ(pid)
        if env.get(MARK_DIR) == wanted:
            owners[pid] = (env.get(MARK_ENV, ""), env.get(MARK_RESOURCE, ""))
        elif pid == stat[2] and (found := _owner_by_cwd(pid, envs_dir)) is not None:
            owners[pid] = found
    by_session = {live[pid][1]: owner for pid, owner in owners.items()}
    return [
        Marked(pid, pgid, *owners.get(pid, by_session.get(sid, ("", ""))))
        for pid, (pgid, sid) in live.items()
        if pid in owners or sid in by_session
    ]


def is_ours(pid: int, data_dir: Path, env_id: str, resource: str) -> bool:
    """Whether ``pid`` is alive and is the marked process it is said to be."""
    return any(
        m.pid == pid and m.env_id == env_id and m.resource == resource for m in scan(data_dir)
    )


def states(procs: list[Marked]) -> list[str | None]:
    return [_state(p.pid) for p in procs]


def signal_groups(procs: list[Marked], sig: signal.Signals) -> None:
    """Send ``sig`` to the process group of each of ``procs`` (and to each itself)."""
    for pgid in {p.pgid for p in procs}:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)
    for p in procs:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p.pid, sig)


async def wait_until(check: Callable[[], bool], budget: float, interval: float = 0.02) -> bool:
    """Poll ``check()`` until it is true or ``timeout`` seconds passed."""
    deadline = time.monotonic() + budget
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(interval)


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])
