"""The host side of a box's forwards runs in its own process: the caller's event loop relays
nothing, and the relay process ends with the box or with its parent."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from provisioning.sandbox import Box, BoxSpec, Limits, ProcessSpec
from tests.sandbox.support import probe

CLIENT = r"""
import os, socket, sys, time
port = int(sys.argv[1])
print("waiting", flush=True)
for _ in range(400):  # until the host touches "go" (bounded: 20 s)
    if os.path.exists("go"):
        break
    time.sleep(0.05)
s = socket.create_connection(("127.0.0.1", port), timeout=10)
s.sendall(b"ping")
print("got", s.recv(64).decode(), flush=True)
"""


@contextmanager
def threaded_echo() -> Iterator[int]:
    """An echo server on host ``127.0.0.1`` served by a thread (it answers while the event
    loop is blocked); yields its port."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                if data := conn.recv(64):
                    conn.sendall(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        done.set()
        thread.join(5)
        server.close()


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie nobody reaped counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _block_loop_until(go: Path, log: Path, text: str) -> str:
    """Called from a coroutine, this blocks its event loop: create ``go``, sleep 200 ms, then
    read ``log`` until it holds ``text`` (bounded: 10 s more); the log as read last."""
    go.touch()
    time.sleep(0.2)
    seen = ""
    for _ in range(200):
        seen = log.read_text()
        if text in seen:
            break
        time.sleep(0.05)
    return seen


async def test_forward_flows_while_the_callers_loop_is_blocked(
    workspace: Path, boxes: list[Box], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRUSCIBLE_TEST_TOKEN", "caller-secret-never-in-relay")
    with threaded_echo() as port:
        command = probe(workspace, "client.py", CLIENT) + f" {port}"
        spec = BoxSpec(
            workdir=workspace / "app",
            processes=(ProcessSpec("t", command),),
            forwards=(port,),
            limits=Limits(wall_s=60),
        )
        box = await Box.start(spec, workspace / "b0")
        boxes.append(box)
        relay = box.relay_pid
        assert relay is not None and relay != os.getpid()
        assert b"provisioning.sandbox.relayd" in Path(f"/proc/{relay}/cmdline").read_bytes()
        assert b"caller-secret" not in Path(f"/proc/{relay}/environ").read_bytes()
        for _ in range(200):  # until the client runs (bounded: 10 s)
            if "waiting" in box.log_tail("t"):
                break
            await asyncio.sleep(0.05)
        # From here on the event loop does not run: time.sleep blocks it. The round trip out
        # of the box (box -> relay process -> echo thread -> back) completes all the same.
        log = _block_loop_until(workspace / "app" / "go", box.log_path("t"), "got")
        assert "got ping" in log, log + box.log_tail("t")
        states = await box.wait(10)
        assert states[0].reason == "exited 0", box.log_tail("t")
        assert _alive(relay)
        await box.stop()
        assert not _alive(relay)


async def test_a_relay_process_that_dies_is_started_again(
    workspace: Path, boxes: list[Box]
) -> None:
    with threaded_echo() as port:
        command = probe(workspace, "client.py", CLIENT) + f" {port}"
        spec = BoxSpec(
            workdir=workspace / "app",
            processes=(ProcessSpec("t", command),),
            forwards=(port,),
            limits=Limits(wall_s=60),
        )
        box = await Box.start(spec, workspace / "b0")
        boxes.append(box)
        first = box.relay_pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        for _ in range(200):  # bounded: 10 s
            if box.relay_pid != first:
                break
            await asyncio.sleep(0.05)
        assert box.relay_pid != first and _alive(box.relay_pid or 0)
        (workspace / "app" / "go").touch()
        states = await box.wait(30)
        assert states[0].reason == "exited 0", box.log_tail("t")
        assert "got ping" in box.log_tail("t")


PARENT = r"""
import asyncio, sys
from pathlib import Path
from provisioning.sandbox.relayd import RelayProcess

async def main():
    relay = await RelayProcess.start(Path(sys.argv[1]), [int(sys.argv[2])])
    print(relay.pid, flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


def test_relay_process_dies_with_its_parent(tmp_path: Path) -> None:
    net = tmp_path / "net"
    net.mkdir()
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(net), "9"],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert parent.stdout is not None
        relay = int(parent.stdout.readline())
        assert _alive(relay)
        assert (net / "out-9.sock").exists()
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
    for _ in range(100):  # bounded: 5 s
        if not _alive(relay):
            break
        time.sleep(0.05)
    assert not _alive(relay)
