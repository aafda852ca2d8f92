"""When the process that started a box dies without stopping it, the box dies too
(bubblewrap's --die-with-parent), and the empty cgroup it leaves is swept later."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import pytest

from provisioning.sandbox import cgroups

DRIVER = r"""
import asyncio, json, sys
from pathlib import Path
from provisioning.sandbox import Box, BoxSpec, Limits, ProcessSpec

async def main():
    work = Path(sys.argv[1])
    spec = BoxSpec(work / "app", (ProcessSpec("t", "sleep 600 & exec sleep 600"),),
                   limits=Limits(wall_s=600))
    box = await Box.start(spec, work / "box")
    for _ in range(100):
        if len(box._cgroup.pids()) >= 3:
            break
        await asyncio.sleep(0.05)
    group = box._cgroup
    print(json.dumps([group.version, {k: str(p) for k, p in group.dirs.items()}]), flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


@pytest.mark.skipif(cgroups.version() is None, reason="needs root and cgroups")
async def test_a_crashed_starter_leaves_no_box_running(workspace: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        DRIVER,
        str(workspace),
        stdout=asyncio.subprocess.PIPE,
        cwd=Path(__file__).parents[2],
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        version, dirs = json.loads(line)
        group = cgroups.Cgroup({k: Path(p) for k, p in dirs.items()}, version)
        assert len(group.pids()) >= 3  # bubblewrap, its init, the supervisor, the sleeps
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
        await proc.wait()
    for _ in range(200):  # bounded: 10 s
        if not group.pids():
            break
        await asyncio.sleep(0.05)
    assert group.pids() == []
    group.remove_now()  # what cgroups.sweep() does for groups left this way
    assert not any(p.exists() for p in group.dirs.values())
