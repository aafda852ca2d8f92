"""Benchmark: our open-model load generator next to wrk, hey and Locust, on 127.0.0.1 only.

Starts a local endpoint (nginx from the distribution if installed, else a small uvloop
server), pins it to the last CPU and every generator to CPU 0, then prints medians over
``--reps`` repetitions of:

* the maximum sustained rate on one core (ours: the highest rate of a ladder it keeps
  on schedule — achieved >= 97 %, no errors, not flagged unreliable, corrected p99
  <= 25 ms; peers: closed-loop throughput with 64 connections, their best case);
* accuracy at a fixed rate (default 5,000 req/s): achieved vs target, the generator's CPU
  share (``resource.getrusage``), p99, and the p99 the generator adds (corrected − raw
  for ours; hey's p99 minus our raw p99 for hey at the same rate).

Run: ``.venv/bin/python benchmarks/loadgen.py [--reps 3] [--seconds 4] [--rate 5000]``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

HOST = "127.0.0.1"
LADDER = (5_000, 10_000, 15_000, 20_000, 25_000, 30_000, 35_000, 40_000, 50_000, 60_000)
SANE_P99_MS = 25.0  # above this the run fell behind somewhere (generator or endpoint)
CONNECTIONS = 64


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def gen_cpu() -> int:
    return cpus()[0]


def server_cpu() -> int:
    return cpus()[-1]


# -- the endpoint -------------------------------------------------------------------------
@contextmanager
def endpoint() -> Iterator[tuple[str, str]]:
    """Yield (base URL, description) of a fast local HTTP endpoint."""
    port = free_port()
    nginx = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if nginx:
        with tempfile.TemporaryDirectory(prefix="cruscible-bench-") as tmp:
            conf = Path(tmp) / "nginx.conf"
            conf.write_text(
                textwrap.dedent(f"""
                worker_processes 1;
                daemon off;
                pid {tmp}/nginx.pid;
                error_log {tmp}/error.log warn;
                events {{ worker_connections 4096; }}
                http {{
                    access_log off;
                    keepalive_requests 1000000;
                    client_body_temp_path {tmp}; proxy_temp_path {tmp};
                    fastcgi_temp_path {tmp}; uwsgi_temp_path {tmp}; scgi_temp_path {tmp};
                    server {{
                        listen {HOST}:{port};
                        location / {{ return 200 "ok\\n"; }}
                    }}
                }}
                """)
            )
            proc = subprocess.Popen(
                ["taskset", "-c", str(server_cpu()), nginx, "-c", str(conf), "-p", tmp],
                stderr=subprocess.DEVNULL,
            )
            try:
                wait_port(port)
                yield f"http://{HOST}:{port}", "nginx (1 worker)"
            finally:
                proc.terminate()
                proc.wait(timeout=10)
        return
    proc = mp.get_context("spawn").Process(target=_tiny_server, args=(port,), daemon=True)
    proc.start()
    try:
        wait_port(port)
        yield f"http://{HOST}:{port}", "tiny uvloop server (nginx not installed)"
    finally:
        proc.terminate()
        proc.join(10)


def _tiny_server(port: int) -> None:
    import asyncio

    import uvloop

    os.sched_setaffinity(0, {server_cpu()})
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n"

    class Proto(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.t = transport

        def data_received(self, data: bytes) -> None:
            self.t.write(reply * data.count(b"\r\n\r\n"))  # type: ignore[attr-defined]

    async def main() -> None:
        loop = asyncio.get_running_loop()
        await loop.create_server(Proto, HOST, port, backlog=4096)
        await asyncio.Event().wait()

    uvloop.run(main())


def wait_port(port: int, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection((HOST, port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the endpoint did not start on {HOST}:{port}")


# -- our generator, in a child process pinned to one CPU -----------------------------------
def _ours(url: str, rate: float, seconds: float, out: mp.Queue) -> None:  # type: ignore[type-arg]
    os.sched_setaffinity(0, {gen_cpu()})
    from grading.load import LoadPlan, Request, run_load_sync

    request = Request("GET", "/")
    plan = LoadPlan(
        rate=rate, duration_s=seconds, make_request=lambda _i: request, connections=CONNECTIONS
    )
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    result = run_load_sync(url, plan)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    out.put(
        {
            "achieved": result.achieved_rate,
            "ok": result.ok,
            "scheduled": result.scheduled,
            "unreliable": result.unreliable,
            "cpu": cpu / wall,
            "p99": result.percentile_ms(99),
            "raw_p99": result.percentile_ms(99, corrected=False),
            "lag_p99": result.lag_p99_ms,
        }
    )


def ours(url: str, rate: float, seconds: float) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_ours, args=(url, rate, seconds, out))
    proc.start()
    try:
        return out.get(timeout=seconds + 60)
    finally:
        proc.join(10)


def ours_max(url: str, seconds: float) -> float:
    best = 0.0
    for rate in LADDER:
        r = ours(url, rate, seconds)
        kept_up = r["achieved"] >= 0.97 * rate and r["ok"] == r["scheduled"]
        if r["unreliable"] or not kept_up or r["p99"] > SANE_P99_MS:
            break
        best = r["achieved"]
    return best


# -- peers --------------------------------------------------------------------------------
def timed(cmd: list[str], timeout: float) -> tuple[str, float]:
    """Run ``cmd``; its output and its CPU share (CPU seconds per wall second)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return proc.stdout + proc.stderr, cpu / wall


def pinned(cmd: list[str]) -> list[str]:
    return ["taskset", "-c", str(gen_cpu()), *cmd]


def wrk_max(url: str, seconds: float) -> float:
    out, _ = timed(
        pinned(["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds:g}s", url + "/"]), seconds + 30
    )
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]


def hey_run(url: str, seconds: float, rate: float | None = None) -> dict[str, float]:
    cmd = ["hey", "-z", f"{seconds:g}s", "-c", str(CONNECTIONS), "-cpus", "1"]
    if rate is not None:
        cmd += ["-q", f"{rate / CONNECTIONS:g}"]  # -q is per worker
    out, cpu = timed(pinned([*cmd, url + "/"]), seconds + 30)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    p99 = re.search(r"99%+ in ([\d.]+) secs", out)
    return {"achieved": rps, "cpu": cpu, "p99": float(p99[1]) * 1000 if p99 else float("nan")}


LOCUSTFILE = """
from locust import constant, task
from locust.contrib.fasthttp import FastHttpUser


class Hit(FastHttpUser):
    wait_time = constant(0)

    @task
    def get(self):
        self.client.get("/")
"""


def locust_max(url: str, seconds: float, locust: str) -> float:
    with tempfile.TemporaryDirectory(prefix="cruscible-locust-") as tmp:
        path = Path(tmp) / "locustfile.py"
        path.write_text(LOCUSTFILE)
        cmd = [locust, "-f", str(path), "--headless", "-u", str(CONNECTIONS), "-r", "1000",
               "-t", f"{seconds:g}s", "--host", url, "--csv", f"{tmp}/stats", "--only-summary"]  # fmt: skip
        timed(pinned(cmd), seconds + 60)
        lines = Path(f"{tmp}/stats_stats.csv").read_text().splitlines()
        header = lines[0].split(",")
        total = next(line.split(",") for line in lines if ",Aggregated," in line)
        return float(total[header.index("Requests/s")])


# -- report -------------------------------------------------------------------------------
def median(runs: list[Callable[[], float]]) -> float:
    return statistics.median(f() for f in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rate", type=float, default=5000.0)
    parser.add_argument("--locust", default=shutil.which("locust") or "/tmp/locust-venv/bin/locust")
    args = parser.parse_args()
    reps, secs = args.reps, args.seconds

    with endpoint() as (url, what):
        print(
            f"endpoint: {what} at {url}; generators on CPU {gen_cpu()}, server on CPU {server_cpu()}"
        )
        print(f"medians of {reps} runs of {secs:g} s\n")
        print("max sustained rate, one core (req/s)")
        print(
            f"  {'cruscible (open model, on schedule)':40s} {median([lambda: ours_max(url, secs)] * reps):>10,.0f}"
        )
        peers: dict[str, Callable[[], float]] = {}
        if shutil.which("wrk"):
            peers["wrk -t1 -c64 (closed loop)"] = lambda: wrk_max(url, secs)
        if shutil.which("hey"):
            peers["hey -c64 -cpus 1 (closed loop)"] = lambda: hey_run(url, secs)["achieved"]
        if os.access(args.locust, os.X_OK):
            peers["locust FastHttpUser, 64 users"] = lambda: locust_max(url, secs, args.locust)
        for name, run in peers.items():
            print(f"  {name:40s} {median([run] * reps):>10,.0f}")

        print(f"\naccuracy at {args.rate:,.0f} req/s")
        print(
            f"  {'':22s} {'achieved':>10s} {'of target':>10s} {'cpu':>6s} {'p99 ms':>8s} {'added p99 ms':>13s}"
        )
        runs = [ours(url, args.rate, secs) for _ in range(reps)]

        def med(key: str, rows: list[dict[str, float]]) -> float:
            return statistics.median(r[key] for r in rows)

        raw_p99 = med("raw_p99", runs)
        print(
            f"  {'cruscible':22s} {med('achieved', runs):>10,.0f} {med('achieved', runs) / args.rate:>10.1%} "
            f"{med('cpu', runs):>6.0%} {med('p99', runs):>8.2f} {med('p99', runs) - raw_p99:>13.2f}"
            f"   (lag p99 {med('lag_p99', runs):.2f} ms)"
        )
        if shutil.which("hey"):
            hey = [hey_run(url, secs, args.rate) for _ in range(reps)]
            print(
                f"  {'hey -q (per worker)':22s} {med('achieved', hey):>10,.0f} "
                f"{med('achieved', hey) / args.rate:>10.1%} {med('cpu', hey):>6.0%} "
                f"{med('p99', hey):>8.2f} {med('p99', hey) - raw_p99:>13.2f}"
            )
        print(
            "\nadded p99: ours = corrected − raw p99 (scheduling lag and waits the open model"
            "\ncounts); hey = its p99 − our raw p99 against the same endpoint."
        )


if __name__ == "__main__":
    sys.exit(main())
