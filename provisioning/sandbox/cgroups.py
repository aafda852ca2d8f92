"""One control group per box: memory (swap off), CPU quota, task count; kill and OOM news.

cgroup v2 (unified, ``/sys/fs/cgroup/cgroup.controllers`` exists) and v1 (one hierarchy per
controller under ``/sys/fs/cgroup/<controller>``) are detected at run time.
Kernel docs: https://docs.kernel.org/admin-guide/cgroup-v2.html and
https://docs.kernel.org/admin-guide/cgroup-v1/memory.html ,
https://docs.kernel.org/admin-guide/cgroup-v1/pids.html ,
https://docs.kernel.org/admin-guide/cgroup-v1/freezer-subsystem.html ,
https://docs.kernel.org/scheduler/sched-bwc.html (CFS bandwidth: quota/period).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from pathlib import Path

from provisioning.sandbox.limits import Limits

log = logging.getLogger(__name__)

ROOT = Path("/sys/fs/cgroup")
PARENT = "cruscible-sandbox"
PERIOD_US = 100_000
V1_CONTROLLERS = ("memory", "cpu", "pids", "freezer")


def version() -> str | None:
    """``"v2"``, ``"v1"`` or ``None`` when we cannot manage cgroups (not root, none mounted)."""
    if os.geteuid() != 0:
        return None
    if (ROOT / "cgroup.controllers").exists():
        return "v2"
    if all((ROOT / c / "cgroup.procs").exists() for c in ("memory", "cpu", "pids")):
        return "v1"
    return None


def _write(path: Path, value: str) -> None:
    path.write_text(value)


def _try_write(path: Path, value: str) -> bool:
    try:
        path.write_text(value)
        return True
    except OSError as exc:
        log.debug("cannot write %s to %s: %s", value, path, exc)
        return False


def _read_kv(path: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            with contextlib.suppress(ValueError):
                out[key] = int(value)
    except OSError:
        pass
    return out


def sweep(min_age_s: float = 60.0) -> int:
    """Remove empty box groups older than ``min_age_s`` (left by a process that died before
    it could stop its boxes; bubblewrap's ``--die-with-parent`` killed their processes).
    Returns how many were removed; groups with processes are left alone."""
    removed = 0
    now = time.time()
    for parent in [ROOT / PARENT, *(ROOT / c / PARENT for c in V1_CONTROLLERS)]:
        if not parent.is_dir():
            continue
        for group in parent.glob("box-*"):
            try:
                if now - group.stat().st_mtime < min_age_s:
                    continue
                if (group / "cgroup.procs").read_text().strip():
                    continue
                group.rmdir()
                removed += 1
            except OSError:
                continue
    return removed


class Cgroup:
    """The group of one box. ``procs_files`` lists the ``cgroup.procs`` files a starting
    process writes its pid to (before it drops privileges), so all it spawns is inside."""

    version: str

    def __init__(self, dirs: dict[str, Path], version: str) -> None:
        self.dirs = dirs
        self.version = version
        self.missing: list[str] = []  # controllers this kernel would not give us (cpu only)

    @property
    def description(self) -> str:
        """``"v1"``, ``"v2"``, or e.g. ``"v2 (no cpu limit: controller unavailable)"``."""
        if not self.missing:
            return self.version
        return f"{self.version} (no {', '.join(self.missing)} limit: controller unavailable)"

    @property
    def procs_files(self) -> list[Path]:
        return [d / "cgroup.procs" for d in self.dirs.values()]

    @classmethod
    def create(cls, box_id: str, limits: Limits) -> Cgroup:
        """Make and configure the group; ``OSError`` when the kernel refuses."""
        kind = version()
        if kind == "v2":
            return cls._create_v2(box_id, limits)
        if kind == "v1":
            return cls._create_v1(box_id, limits)
        raise OSError("no cgroup hierarchy we can manage")

    @classmethod
    def _create_v1(cls, box_id: str, limits: Limits) -> Cgroup:
        dirs: dict[str, Path] = {}
        for controller in V1_CONTROLLERS:
            base = ROOT / controller
            if not base.is_dir():
                continue
            path = base / PARENT / box_id
            path.mkdir(parents=True, exist_ok=True)
            dirs[controller] = path
        group = cls(dirs, "v1")
        try:
            mem = dirs["memory"]
            limit = str(limits.memory_mb * 1024 * 1024)
            _write(mem / "memory.limit_in_bytes", limit)
            _try_write(mem / "memory.memsw.limit_in_bytes", limit)  # swap off: mem+swap = mem
            _try_write(mem / "memory.swappiness", "0")
            _write(dirs["pids"] / "pids.max", str(limits.pids))
            cpu = dirs.get("cpu")
            quota = str(max(1000, int(limits.cpus * PERIOD_US)))
            if not (
                cpu is not None
                and _try_write(cpu / "cpu.cfs_period_us", str(PERIOD_US))
                and _try_write(cpu / "cpu.cfs_quota_us", quota)
            ):
                group.missing.append("cpu")
        except BaseException:
            group.remove_now()
            raise
        return group

    @classmethod
    def _create_v2(cls, box_id: str, limits: Limits) -> Cgroup:
        parent = ROOT / PARENT
        parent.mkdir(exist_ok=True)
        wanted = {"memory", "cpu", "pids"}
        available = set((ROOT / "cgroup.controllers").read_text().split())
        _try_write(ROOT / "cgroup.subtree_control", " ".join(f"+{c}" for c in wanted & available))
        enable = sorted(wanted & available)
        if not _try_write(parent / "cgroup.subtree_control", " ".join(f"+{c}" for c in enable)):
            for controller in enable:  # one by one: cpu may be refused alone
                _try_write(parent / "cgroup.subtree_control", f"+{controller}")
        path = parent / box_id
        path.mkdir(exist_ok=True)
        group = cls({"unified": path}, "v2")
        try:
            _write(path / "memory.max", str(limits.memory_mb * 1024 * 1024))
            _try_write(path / "memory.swap.max", "0")
            _write(path / "pids.max", str(limits.pids))
            if not _try_write(
                path / "cpu.max", f"{max(1000, int(limits.cpus * PERIOD_US))} {PERIOD_US}"
            ):
                group.missing.append("cpu")
        except BaseException:
            group.remove_now()
            raise
        return group

    def oom_kills(self) -> int:
        """How many processes the kernel killed for the memory limit (v1
        ``memory.oom_control`` ``oom_kill``, v2 ``memory.events`` ``oom_kill``)."""
        if self.version == "v2":
            return _read_kv(self.dirs["unified"] / "memory.events").get("oom_kill", 0)
        return _read_kv(self.dirs["memory"] / "memory.oom_control").get("oom_kill", 0)

    def pids_refused(self) -> int:
        """How many forks the task limit refused (``pids.events`` ``max``)."""
        key = "unified" if self.version == "v2" else "pids"
        return _read_kv(self.dirs[key] / "pids.events").get("max", 0)

    def cpu_throttled(self) -> int:
        """How many CFS periods the box was held back by its CPU quota (``cpu.stat``
        ``nr_throttled``, v1 and v2)."""
        path = self.dirs.get("unified" if self.version == "v2" else "cpu")
        return _read_kv(path / "cpu.stat").get("nr_throttled", 0) if path else 0

    def pids(self) -> list[int]:
        main = self.dirs.get("unified") or self.dirs.get("pids") or next(iter(self.dirs.values()))
        try:
            return [int(x) for x in (main / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    async def kill(self) -> None:
        """Kill every process in the group (v2 ``cgroup.kill``; v1 freeze, SIGKILL each pid,
        thaw) and wait until it is empty (bounded: 5 s)."""
        if self.version == "v2" and _try_write(self.dirs["unified"] / "cgroup.kill", "1"):
            pass
        else:
            freezer = self.dirs.get("freezer")
            frozen = freezer is not None and _try_write(freezer / "freezer.state", "FROZEN")
            for _ in range(50):
                pids = self.pids()
                if not pids:
                    break
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                if frozen:
                    _try_write(freezer / "freezer.state", "THAWED")  # type: ignore[operator]
                    frozen = False
                await asyncio.sleep(0.02)
        for _ in range(250):
            if not self.pids():
                return
            await asyncio.sleep(0.02)
        log.warning("cgroup %s still has processes after kill", self.dirs)

    def remove_now(self) -> None:
        """Remove the (empty) group directories; leftovers are logged, not raised."""
        for path in self.dirs.values():
            try:
                path.rmdir()
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("cannot remove cgroup %s: %s", path, exc)
