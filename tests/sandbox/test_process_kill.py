"""Killing a process of a box on request, and starting it again: the replica started last is
killed with its children and reported as held, not crashed; a process that dies by itself
still is. The control channel is the host's alone: code in the box cannot use it."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import pytest

from provisioning.sandbox import Box, BoxSpec, Limits, ProcessSpec, SandboxError
from tests.sandbox.support import probe

SLEEPER = "sleep 600 & exec sleep 600"  # a child of its own: the kill must take it too


def sleeps(box: Box) -> int:
    """How many ``sleep 600`` run in the box's cgroup."""
    found = 0
    for pid in box._cgroup.pids() if box._cgroup else []:
        with contextlib.suppress(OSError):
            found += Path(f"/proc/{pid}/cmdline").read_bytes() == b"sleep\x00600\x00"
    return found


async def running(box: Box, name: str, count: int, limit_s: float = 10.0) -> None:
    """Wait (bounded) until ``count`` replicas of ``name`` run."""
    for _ in range(int(limit_s / 0.05)):
        if sum(s.running for s in box.states() if s.name == name) == count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{name}: {box.states()}")


async def test_a_killed_replica_is_held_then_started_again(
    workspace: Path, boxes: list[Box]
) -> None:
    spec = BoxSpec(
        workspace / "app",
        (
            ProcessSpec("worker", SLEEPER, replicas=2),
            ProcessSpec("crasher", "sleep 1; exit 3"),
        ),
        limits=Limits(wall_s=60),
    )
    box = await Box.start(spec, workspace / "box")
    boxes.append(box)
    await running(box, "worker", 2)
    if box._cgroup is not None:
        for _ in range(100):  # bounded: each replica's two sleeps, seen from the host
            if sleeps(box) == 4:
                break
            await asyncio.sleep(0.05)
        assert sleeps(box) == 4

    killed = await box.kill_process("worker")
    assert killed.replicas == (1,)  # the one started last
    assert killed.effective_at >= killed.requested_at
    states = {(s.name, s.replica): s for s in box.states()}
    held = states[("worker", 1)]
    assert not held.running and held.held and held.signal == 9
    assert held.reason.startswith("killed on request")
    assert states[("worker", 0)].running
    if box._cgroup is not None:  # its `sleep 600 &` child went with it
        assert sleeps(box) == 2

    started = await box.start_process("worker")
    assert started.replicas == (1,)
    await running(box, "worker", 2)
    again = next(s for s in box.states() if (s.name, s.replica) == ("worker", 1))
    assert again.running and again.restarts == 1 and not again.held

    await asyncio.sleep(1.5)  # the crasher exits by itself: a crash, not held
    crashed = next(s for s in box.states() if s.name == "crasher")
    assert not crashed.running and not crashed.held and crashed.reason == "exited 3"
    with pytest.raises(SandboxError, match="no running replica of crasher"):
        await box.kill_process("crasher")
    # a killed process whose siblings all exited keeps the box alive until it is started again
    await box.kill_process("worker")
    await box.kill_process("worker")
    await asyncio.sleep(0.3)
    assert not box._done.is_set()
    assert (await box.start_process("worker")).replicas == (0, 1)
    await running(box, "worker", 2)


HOSTILE = r"""
import errno, json, os, signal, socket
out = {}
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    sock.connect("/box/net/control.sock")
    sock.sendall(json.dumps({"kill": "victim"}).encode() + b"\n")
    out["connect"] = sock.recv(1000).decode() or "closed"
except OSError as exc:
    out["connect"] = errno.errorcode[exc.errno]
def argv(pid):
    return open(f"/proc/{pid}/cmdline").read().split("\0")


supervisor = next(  # bubblewrap's init names boxinit.py too: the one that is not bwrap
    int(p) for p in os.listdir("/proc")
    if p.isdigit() and "/box/boxinit.py" in argv(p) and "bwrap" not in argv(p)[0]
)
out["supervisor"] = " ".join(argv(supervisor))
try:
    out["supervisor_fds"] = os.listdir(f"/proc/{supervisor}/fd")
except OSError as exc:
    out["supervisor_fds"] = errno.errorcode[exc.errno]
try:
    os.unlink("/box/net/control.sock")
    out["unlink"] = "removed"
except OSError as exc:
    out["unlink"] = errno.errorcode[exc.errno]
print(json.dumps(out), flush=True)
os.kill(supervisor, signal.SIGKILL)  # the one harm left to it: ending its own box
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="the box runs as another user only under root")
async def test_code_in_the_box_cannot_use_the_control_channel(
    workspace: Path, boxes: list[Box]
) -> None:
    command = probe(workspace, "hostile.py", HOSTILE)
    spec = BoxSpec(
        workspace / "app",
        (ProcessSpec("victim", SLEEPER), ProcessSpec("hostile", f"sleep 0.5; {command}")),
        limits=Limits(wall_s=60),
    )
    box = await Box.start(spec, workspace / "box")
    boxes.append(box)
    states = await box.wait(20)
    log = box.log_tail("hostile", lines=50)
    assert '"connect": "EACCES"' in log, log  # a root-owned, owner-only socket file
    assert '"supervisor_fds": "EACCES"' in log, log  # the supervisor is not dumpable
    assert '"unlink": "EROFS"' in log, log  # /box/net is read-only inside
    victim = next(s for s in states if s.name == "victim")
    assert not victim.held  # it was never killed on request: it ended with the box
    assert victim.reason != "killed on request (to be started again)"
    with pytest.raises(SandboxError, match="is not running"):  # the box ended: nothing else
        await box.kill_process("victim")
    assert (workspace / "box" / "net" / "control.sock").exists()


async def test_a_docker_box_kills_and_starts_a_process_the_same_way(
    workspace: Path, docker_engine: str
) -> None:
    """The docker box's supervisor gets the control socket in its handoff: same answers."""
    from provisioning.sandbox.docker_box import DockerBox

    spec = BoxSpec(
        workspace / "app", (ProcessSpec("worker", SLEEPER, replicas=2),), limits=Limits(wall_s=60)
    )
    box = await DockerBox.start(spec, workspace / "dbox")
    try:
        await running(box, "worker", 2, limit_s=30)
        assert (await box.kill_process("worker")).replicas == (1,)
        held = next(s for s in box.states() if s.replica == 1)
        assert held.held and not held.running
        assert (await box.start_process("worker")).replicas == (1,)
        await running(box, "worker", 2)
        assert next(s for s in box.states() if s.replica == 1).restarts == 1
    finally:
        await box.stop()
