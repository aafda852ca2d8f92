"""What the sandbox's relays cost on a round trip: ``await relay_overhead(root)`` or
``python -m provisioning.sandbox.bench``.

Three paths, each timed as median and p99 microseconds per round trip (``rounds`` each, on a
persistent connection and with a new connection per round trip, like HTTP without keep-alive):

- ``direct``: host client to a host echo server on ``127.0.0.1`` (the baseline);
- ``inbound``: host client to an echo server inside a box through its inbound socket (what the
  balancer pays per request);
- ``forward``: a client inside a box to the host echo server through the forward relays (what
  the learner's code pays per call to its database, cache, queue or provider);
  ``forward.host_cpu`` is the CPU this process (the caller) spent per forwarded round trip and
  ``forward.relay_cpu`` the CPU of the box's relay process, averaged over both modes (in
  microseconds, in the ``p50_us`` field). The host echo server runs in its own process, so the
  caller's figure is what relaying costs the caller's event loop: about nothing, since the
  relays run in :mod:`provisioning.sandbox.relayd`.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from provisioning.sandbox.box import Box
from provisioning.sandbox.limits import Limits
from provisioning.sandbox.spec import BoxSpec, ProcessSpec

ECHO = r"""
import os, socket, sys, threading, time, json, statistics
def serve(port):
    server = socket.create_server(("127.0.0.1", port))
    print("PORT", server.getsockname()[1], flush=True)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=echo, args=(conn,), daemon=True).start()
def echo(conn):
    with conn:
        while data := conn.recv(65536):
            conn.sendall(data)
def client(port, rounds):
    out = {}
    s = socket.create_connection(("127.0.0.1", port))
    times = []
    for _ in range(rounds):
        t = time.perf_counter(); s.sendall(b"x" * 64); s.recv(65536)
        times.append(time.perf_counter() - t)
    s.close()
    out["keepalive"] = times
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        s = socket.create_connection(("127.0.0.1", port)); s.sendall(b"x" * 64); s.recv(65536)
        s.close()
        times.append(time.perf_counter() - t)
    out["connect"] = times
    print("RESULT " + json.dumps(out), flush=True)
if sys.argv[1] == "serve":
    serve(int(os.environ.get("PORT", "0")))
else:
    client(int(sys.argv[2]), int(sys.argv[3]))
"""


def _summary(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return {"p50_us": round(statistics.median(ordered) * 1e6, 1), "p99_us": round(p99 * 1e6, 1)}


Connect = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


async def _client(connect: Connect, rounds: int) -> dict[str, list[float]]:
    payload = b"x" * 64
    keep: list[float] = []
    reader, writer = await connect()
    for _ in range(rounds):
        start = time.perf_counter()
        writer.write(payload)
        await reader.readexactly(len(payload))
        keep.append(time.perf_counter() - start)
    writer.close()
    fresh: list[float] = []
    for _ in range(rounds):
        start = time.perf_counter()
        reader, writer = await connect()
        writer.write(payload)
        await reader.readexactly(len(payload))
        writer.close()
        fresh.append(time.perf_counter() - start)
    return {"keepalive": keep, "connect": fresh}


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of process ``pid`` (proc(5): utime, stime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def relay_overhead(
    root: Path, rounds: int = 500, cpus: float = Limits.cpus
) -> dict[str, dict[str, float]]:
    """Median and p99 round-trip microseconds per path and mode, e.g.
    ``{"direct.keepalive": {"p50_us": 40.0, "p99_us": 90.0}, "inbound.connect": {...}}``.
    ``root`` is an empty, short, world-searchable directory (boxes are made under it)."""
    app = root / "app"
    app.mkdir(mode=0o755)
    (app / "echo.py").write_text(ECHO)
    (app / "echo.py").chmod(0o644)
    # The host echo server in its own process: this process's CPU is then the caller's own.
    server = await asyncio.create_subprocess_exec(
        sys.executable, str(app / "echo.py"), "serve", stdout=asyncio.subprocess.PIPE
    )
    assert server.stdout is not None
    port = int((await asyncio.wait_for(server.stdout.readline(), 10)).split()[1])
    results: dict[str, dict[str, float]] = {}
    try:
        direct = await _client(lambda: asyncio.open_connection("127.0.0.1", port), rounds)
        for mode, times in direct.items():
            results[f"direct.{mode}"] = _summary(times)
        spec = BoxSpec(
            workdir=app,
            processes=(
                ProcessSpec("echo", "python echo.py serve", port=True),
                ProcessSpec(
                    "client",
                    f"while [ ! -e go ]; do sleep 0.05; done; python echo.py client {port} {rounds}",
                ),
            ),
            forwards=(port,),
            limits=Limits(wall_s=120, cpus=cpus),
        )
        box = await Box.start(spec, root / "box")
        try:
            path = box.inbound("echo", 0)
            for _ in range(100):  # until the echo server listens
                try:
                    reader, writer = await asyncio.open_unix_connection(str(path))
                    writer.write(b"x")
                    if await reader.read(1):
                        writer.close()
                        break
                    writer.close()
                except OSError:
                    pass
                await asyncio.sleep(0.05)
            inbound = await _client(lambda: asyncio.open_unix_connection(str(path)), rounds)
            for mode, times in inbound.items():
                results[f"inbound.{mode}"] = _summary(times)
            relay = box.relay_pid
            assert relay is not None
            relay_before = _cpu_seconds(relay)
            cpu_before = time.process_time()
            (app / "go").touch()  # the workdir is a bind mount: the box sees it appear
            for _ in range(600):
                line = next(
                    (x for x in box.log_tail("client", lines=5).splitlines() if "RESULT" in x), ""
                )
                if line:
                    break
                await asyncio.sleep(0.1)
            host_cpu = time.process_time() - cpu_before
            relay_cpu = _cpu_seconds(relay) - relay_before
            forward = json.loads(line.split("RESULT ", 1)[1]) if line else {}
            for mode, times in forward.items():
                results[f"forward.{mode}"] = _summary(times)
            if forward:
                # CPU per forwarded round trip: this process's (the caller's), the relay's.
                for key, cpu in (("host_cpu", host_cpu), ("relay_cpu", relay_cpu)):
                    per_rt = cpu / (2 * rounds) * 1e6
                    results[f"forward.{key}"] = {"p50_us": round(per_rt, 1), "p99_us": 0.0}
        finally:
            await box.stop()
    finally:
        server.kill()
        await server.wait()
    return results


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    reason = Box.available()
    if reason:
        sys.exit(f"cannot measure: {reason}")
    root = Path(tempfile.mkdtemp(prefix="sbx-bench-", dir="/tmp"))
    root.chmod(0o755)
    figures = asyncio.run(relay_overhead(root, rounds))
    print(f"{'path':<20} {'p50 us':>8} {'p99 us':>8}   ({rounds} round trips of 64 bytes each)")
    for name, figure in figures.items():
        print(f"{name:<20} {figure['p50_us']:>8} {figure['p99_us']:>8}")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
