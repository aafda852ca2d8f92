"""The caps every sandbox runs under: the same for every learner."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """Resource caps for one box (all its processes together unless noted).

    - ``cpus``: CPU time share of the whole box, in CPUs (1.5 = 150 ms per 100 ms period;
      cgroup v1 ``cpu.cfs_quota_us`` / v2 ``cpu.max``).
    - ``memory_mb``: memory of the whole box in MiB, tmpfs pages included; swap is off where
      the kernel lets us (v1 ``memory.memsw.limit_in_bytes``, v2 ``memory.swap.max``).
    - ``pids``: tasks (processes and threads) of the whole box (``pids.max``): a fork bomb stops
      there.
    - ``disk_mb``: the box's writable area in MiB: the size of its private tmpfs, and for a box
      that writes ``/app`` (a build) the most it may add there; logs count too.
    - ``open_files``: ``RLIMIT_NOFILE`` of each process.
    - ``wall_s``: seconds after which the host kills the box (``None``: until stopped).

    Without root (no cgroups) the same numbers become per-process rlimits (``RLIMIT_AS``,
    ``RLIMIT_NPROC``, ``RLIMIT_FSIZE``); :attr:`Box.isolation` says which applied.
    """

    cpus: float = 1.5
    memory_mb: int = 512
    pids: int = 256
    disk_mb: int = 512
    open_files: int = 1024
    wall_s: float | None = None

    def describe(self) -> str:
        """One line for ``Box.isolation["limits"]``."""
        return (
            f"memory {self.memory_mb} MB, cpus {self.cpus}, pids {self.pids}, "
            f"disk {self.disk_mb} MB, open files {self.open_files}"
            + (f", wall {self.wall_s:g} s" if self.wall_s else "")
        )

    def __post_init__(self) -> None:
        if self.cpus <= 0:
            raise ValueError(f"cpus must be > 0, got {self.cpus}")
        for name in ("memory_mb", "pids", "disk_mb", "open_files"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.memory_mb < 16:
            raise ValueError(f"memory_mb must be at least 16, got {self.memory_mb}")
        if self.pids < 8:
            raise ValueError(f"pids must be at least 8, got {self.pids}")
        if self.wall_s is not None and self.wall_s <= 0:
            raise ValueError(f"wall_s must be > 0 or None, got {self.wall_s}")
