"""The cgroup layer on both hierarchies: what each limit file gets, and killing a whole group.

This machine mounts cgroup v1 controllers; its v2 hierarchy (``/sys/fs/cgroup/unified``) has no
resource controller, so v2 limits are checked as the files the kernel documents
(https://docs.kernel.org/admin-guide/cgroup-v2.html) and v2's ``cgroup.kill`` on the real
hierarchy."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import pytest

from provisioning.sandbox import Limits, cgroups
from provisioning.sandbox.cgroups import Cgroup

UNIFIED = Path("/sys/fs/cgroup/unified")


def test_v2_limits_are_written_as_documented(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (tmp_path / "cgroup.subtree_control").write_text("")
    monkeypatch.setattr(cgroups, "ROOT", tmp_path)
    monkeypatch.setattr(cgroups.os, "geteuid", lambda: 0)
    assert cgroups.version() == "v2"
    group = Cgroup.create("box-test", Limits(cpus=1.5, memory_mb=256, pids=100))
    path = tmp_path / "cruscible-sandbox" / "box-test"
    assert group.dirs == {"unified": path}
    assert (path / "memory.max").read_text() == str(256 * 1024 * 1024)
    assert (path / "memory.swap.max").read_text() == "0"
    assert (path / "cpu.max").read_text() == "150000 100000"
    assert (path / "pids.max").read_text() == "100"
    enabled = set((tmp_path / "cruscible-sandbox" / "cgroup.subtree_control").read_text().split())
    assert enabled == {"+memory", "+cpu", "+pids"}
    (path / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    (path / "pids.events").write_text("max 7\n")
    assert group.oom_kills() == 1 and group.pids_refused() == 7
    assert group.procs_files == [path / "cgroup.procs"]
    assert group.description == "v2"


def test_v2_without_a_cpu_controller_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "cgroup.controllers").write_text("memory pids\n")
    (tmp_path / "cgroup.subtree_control").write_text("")
    monkeypatch.setattr(cgroups, "ROOT", tmp_path)
    monkeypatch.setattr(cgroups.os, "geteuid", lambda: 0)
    box = tmp_path / "cruscible-sandbox" / "box-test"
    box.mkdir(parents=True)
    (box / "cpu.max").mkdir()  # a write to it fails, as when the controller is not enabled
    group = Cgroup.create("box-test", Limits(memory_mb=256, pids=100))
    assert (box / "memory.max").read_text() == str(256 * 1024 * 1024)
    assert group.description == "v2 (no cpu limit: controller unavailable)"


@pytest.mark.skipif(
    os.geteuid() != 0 or not (UNIFIED / "cgroup.procs").exists(),
    reason="needs root and a v2 hierarchy at /sys/fs/cgroup/unified",
)
async def test_v2_kill_empties_the_group() -> None:
    path = UNIFIED / cgroups.PARENT / f"kill-test-{os.getpid()}"
    path.mkdir(parents=True, exist_ok=True)
    if not (path / "cgroup.kill").exists():
        path.rmdir()
        pytest.skip("this kernel has no cgroup.kill")
    group = Cgroup({"unified": path}, "v2")
    join = f"echo $$ > {path}/cgroup.procs; sleep 60 & sleep 60 & exec sleep 60"
    proc = await asyncio.create_subprocess_exec("/bin/sh", "-c", join)
    try:
        for _ in range(100):
            if len(group.pids()) == 3:
                break
            await asyncio.sleep(0.05)
        assert len(group.pids()) == 3
        await group.kill()
        assert group.pids() == []
        assert await asyncio.wait_for(proc.wait(), 10) == -9
    finally:
        if proc.returncode is None:
            proc.kill()
        group.remove_now()
    assert not path.exists()


@pytest.mark.skipif(cgroups.version() != "v1", reason="needs root and cgroup v1 controllers")
async def test_sweep_removes_empty_leftovers_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cgroups, "PARENT", f"cruscible-sandbox-sweep-{os.getpid()}")
    left = Cgroup.create("box-left", Limits())
    busy = Cgroup.create("box-busy", Limits())
    join = " ".join(f"echo $$ > {f};" for f in busy.procs_files) + " exec sleep 60"
    proc = await asyncio.create_subprocess_exec("/bin/sh", "-c", join)
    try:
        for _ in range(100):
            if busy.pids():
                break
            await asyncio.sleep(0.05)
        assert busy.pids() == [proc.pid]
        # the sweep is periodic: a group the kernel is still releasing goes on the next one
        removed = [cgroups.sweep(min_age_s=0) for _ in range(3)]
        assert sum(removed) == len(left.dirs), removed
        assert not any(p.exists() for p in left.dirs.values())
        assert all(p.exists() for p in busy.dirs.values())
    finally:
        await busy.kill()
        await proc.wait()
        busy.remove_now()
        for controller in cgroups.V1_CONTROLLERS:
            with contextlib.suppress(OSError):
                (cgroups.ROOT / controller / cgroups.PARENT).rmdir()
    assert cgroups.sweep(min_age_s=0) == 0
