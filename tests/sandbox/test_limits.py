"""Code that exhausts a resource is stopped at the cap, with the reason, and nothing else is
harmed."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from provisioning.sandbox import Box, BoxSpec, Limits, ProcessSpec
from tests.sandbox.support import cgroup_dirs_left, probe, run

needs_cgroups = pytest.mark.skipif(os.geteuid() != 0, reason="cgroup limits need root")


@needs_cgroups
async def test_fork_bomb_hits_the_process_limit(workspace: Path, boxes: list[Box]) -> None:
    spec = BoxSpec(
        workdir=workspace / "app",
        processes=(ProcessSpec("t", "b(){ b | b & }; b; exec sleep 60"),),
        limits=Limits(pids=48, cpus=0.5, wall_s=90),
    )
    box = await Box.start(spec, workspace / "b0")
    boxes.append(box)
    assert box._cgroup is not None
    for _ in range(600):  # until the kernel refused a fork (bounded: 60 s)
        if box._cgroup.pids_refused():
            break
        await asyncio.sleep(0.1)
    # The host keeps forking while the bomb runs, and the bomb never exceeds its cap.
    host = await asyncio.create_subprocess_exec("true")
    assert await asyncio.wait_for(host.wait(), 30) == 0
    assert 0 < len(box._cgroup.pids()) <= 48
    await box.stop()
    state = box.states()[0]
    assert state.reason == "stopped (process limit 48 reached)"
    assert state.signal == signal.SIGKILL and not state.oom_killed
    assert cgroup_dirs_left(box) == []


@needs_cgroups
async def test_busy_loops_are_held_to_the_cpu_share(workspace: Path, boxes: list[Box]) -> None:
    spec = BoxSpec(
        workdir=workspace / "app",
        processes=(ProcessSpec("spin", "exec python3 -c 'while True: pass'", replicas=2),),
        limits=Limits(cpus=0.1, wall_s=60),
    )
    box = await Box.start(spec, workspace / "b0")
    boxes.append(box)
    assert box._cgroup is not None
    for _ in range(300):  # until the kernel held the box back (bounded: 30 s)
        if box._cgroup.cpu_throttled() >= 3:
            break
        await asyncio.sleep(0.1)
    assert box._cgroup.cpu_throttled() >= 3
    assert all(state.running for state in box.states())


@needs_cgroups
async def test_memory_hog_is_oom_killed(workspace: Path, boxes: list[Box]) -> None:
    hog = "chunks = []\nwhile True:\n    chunks.append(bytearray(4 * 1024 * 1024))\n"
    _box, state, log = await run(
        workspace, boxes, probe(workspace, "hog.py", hog), limits=Limits(memory_mb=64, wall_s=30)
    )
    assert state.oom_killed, (state, log)
    assert state.reason == "killed: memory limit 64 MB"


FILLER = r"""
import errno, os
chunk = b"x" * (1024 * 1024)
def fill(paths):
    written = 0
    try:
        for path in paths:
            with open(path, "ab") as f:
                while True:
                    f.write(chunk)
                    f.flush()
                    written += 1
                    if len(paths) > 1:
                        break
    except OSError as exc:
        return written, errno.errorcode[exc.errno]
    return written, "no error"
print("one file", *fill(["/tmp/big"]))
os.remove("/tmp/big")
print("many files", *fill([f"/tmp/f{i}" for i in range(1000)]))
st = os.statvfs("/tmp")
print("tmp size MB", st.f_blocks * st.f_frsize // (1024 * 1024))
for name in os.listdir("/tmp"):
    os.remove(os.path.join("/tmp", name))
"""


async def test_disk_filler_stops_at_the_cap(workspace: Path, boxes: list[Box]) -> None:
    # The private /tmp is a tmpfs of disk_mb, and RLIMIT_FSIZE caps any one file at it: one big
    # file stops at the cap (EFBIG), many small ones when the tmpfs is full (ENOSPC).
    command = probe(workspace, "fill.py", FILLER) + "; head -c 40000000 /dev/zero > /tmp/x"
    _box, state, log = await run(workspace, boxes, command, limits=Limits(disk_mb=16, wall_s=30))
    assert "one file 16 EFBIG" in log
    assert "many files 16 ENOSPC" in log or "many files 15 ENOSPC" in log
    assert "tmp size MB 16" in log
    # A process that does not ignore SIGXFSZ (Python does) is killed by it, and we say why.
    assert state.reason == "killed: disk limit 16 MB (file size)", log
    assert (workspace / "b0" / "logs" / "t-0.log").stat().st_size < 4096


async def test_build_filling_app_is_killed_at_the_disk_cap(
    workspace: Path, boxes: list[Box]
) -> None:
    # A build may write /app; many files each under the per-file cap still add up. The host
    # watches the usage and kills the box beyond the cap, so the loop never finishes.
    command = "i=0; while [ $i -lt 500 ]; do head -c 1000000 /dev/zero > f$i; i=$((i+1)); done; echo all written; sleep 60"
    _box, state, log = await run(
        workspace, boxes, command, limits=Limits(disk_mb=16, wall_s=60), writable_app=True
    )
    assert state.reason == "killed: disk limit 16 MB", state
    assert "all written" not in log
    assert not (workspace / "app" / "f499").exists()


async def test_open_files_stop_at_the_cap(workspace: Path, boxes: list[Box]) -> None:
    source = (
        "import errno\nfiles = []\ntry:\n    while len(files) < 100000:\n"
        "        files.append(open('/dev/null'))\nexcept OSError as exc:\n"
        "    print('opened', len(files), errno.errorcode[exc.errno])\n"
    )
    command = probe(workspace, "files.py", source)
    _box, state, log = await run(workspace, boxes, command, limits=Limits(open_files=64))
    assert state.reason == "exited 0", log
    opened, error = log.split()[1:3]
    assert error == "EMFILE" and 50 < int(opened) < 64


async def test_process_that_never_exits_meets_the_wall_time(
    workspace: Path, boxes: list[Box]
) -> None:
    box, state, _log = await run(workspace, boxes, "exec sleep 600", limits=Limits(wall_s=1))
    assert state.reason == "killed: wall time 1 s"
    assert not state.running and state.signal == signal.SIGKILL
    assert box.states()[0].reason == "killed: wall time 1 s"
