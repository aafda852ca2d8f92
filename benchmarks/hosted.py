"""Benchmark: hosted submissions, on 127.0.0.1 only.

Prints, in one run, medians over ``--reps`` repetitions of:

* the time from a submission (a folder holding rate-limiter's ``redis_lua`` reference design
  with its wheels) to the first request it can take: fetch + build + sandbox start + every
  replica answering ``/healthz`` — with the build not cached (a fresh cache each time) and
  cached;
* the sandbox's cost on that design: p99 (corrected for coordinated omission) at a fixed rate,
  and the throughput achieved at a rate beyond what it sustains, with the same load
  (``grading.load``) against the design run unsandboxed (``python -m``, as ``cruscible demo``
  used to) and hosted (sandbox, socket relays, the round-robin balancer), one after the other
  in each repetition; and the ratios;
* the balancer alone: its CPU time per request (``/proc/<pid>/stat``) in front of a trivial
  aiohttp replica on a socket file, 4,000 requests over 32 keep-alive connections.

The load generator, the host side of the sandbox's relays and the servers share the machine:
the figures are what a grade on this machine sees, not an isolated measurement of the relays.

Run: ``.venv/bin/python benchmarks/hosted.py [--reps 3] [--rate 400] [--max-rate 3000]
[--seconds 6]`` (as root, for the sandbox user and cgroups).
"""

from __future__ import annotations

import argparse
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

import aiohttp
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.app import App, open_app, url_policy  # noqa: E402
from bot.config import Settings  # noqa: E402
from bot.core.hosted import HostedGrader, package_reference  # noqa: E402
from bot.core.outbox import Actor  # noqa: E402
from challenges.launch import running  # noqa: E402
from grading.load import LoadPlan, LoadResult, Request, Response, run_load  # noqa: E402
from grading.urlguard import Policy, resolve_target  # noqa: E402
from provisioning import Environment  # noqa: E402
from provisioning.hosted.balancer import start_balancer  # noqa: E402
from provisioning.hosted.submission import env_secrets  # noqa: E402
from provisioning.sandbox import Box  # noqa: E402

CHALLENGE, DESIGN = "rate-limiter", "redis_lua"
BENCH = Actor("console", "bench", "bench")
KEYS = 10_000
TRIVIAL_REPLICA = """
import asyncio, sys, uvloop
from aiohttp import web
async def check(request):
    await request.read()
    return web.json_response({"allowed": True, "remaining": 1})
async def main():
    app = web.Application()
    app.router.add_post("/v1/check", check)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.UnixSite(runner, sys.argv[1]).start()
    await asyncio.Event().wait()
uvloop.run(main())
"""


def classify(_req: Request, resp: Response) -> str | None:
    return None if resp.status in (200, 429) else f"http_{resp.status}"


def plan(rate: float, seconds: float) -> LoadPlan:
    def make(i: int) -> Request:
        body = json.dumps({"key": f"bench-{i % KEYS}", "cost": 1}).encode()
        return Request("POST", "/v1/check", body, (("Content-Type", "application/json"),))

    return LoadPlan(rate=rate, duration_s=seconds, make_request=make, classify=classify)


async def load(url: str, rate: float, seconds: float) -> LoadResult:
    target = await resolve_target(url, Policy(allow_loopback=True))
    return await run_load(target, plan(rate, seconds))


def tmp_root() -> Path:
    path = Path(tempfile.mkdtemp(prefix="chb-", dir="/tmp"))
    path.chmod(0o711)
    return path


async def to_first_request(app: App, env: Environment, repo: Path, work_root: Path) -> float:
    """Seconds from the submission to the service answering through the balancer."""
    challenge = app.catalog.get(CHALLENGE)
    grader = HostedGrader(
        app.coach.grader, app.settings.data_dir, url_policy(app.settings), work_root=work_root
    )
    t0 = time.monotonic()
    sub, _ = await grader.prepare(repo, challenge, scope="bench")
    service = await grader.start(sub, challenge, env)
    elapsed = time.monotonic() - t0
    await sub.finish(service, env_secrets(env))
    return elapsed


async def measure(
    start: Callable[[], Awaitable[tuple[str, Callable[[], Awaitable[None]]]]],
    rate: float,
    max_rate: float,
    seconds: float,
) -> tuple[float, float, float]:
    """(p99 ms at ``rate``, ok/s achieved at ``max_rate``, error rate at ``rate``)."""
    url, stop = await start()
    try:
        await load(url, min(rate, 100), 1.0)  # warm the connections and the pools
        steady = await load(url, rate, seconds)
        burst = await load(url, max_rate, seconds)
    finally:
        await stop()
    return steady.percentile_ms(99), burst.ok / burst.duration_s, steady.error_rate


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def balancer_cpu_us(requests: int = 4000) -> float:
    """The balancer's CPU time per request (µs) in front of a trivial replica."""
    root = tmp_root()
    sock = root / "replica.sock"
    replica = await asyncio.create_subprocess_exec(sys.executable, "-c", TRIVIAL_REPLICA, str(sock))
    try:
        for _ in range(100):
            if sock.exists():
                break
            await asyncio.sleep(0.05)
        balancer = await start_balancer([sock])
        try:
            connector = aiohttp.TCPConnector(limit=32)
            async with aiohttp.ClientSession(connector=connector) as http:

                async def one() -> None:
                    async with http.post(f"{balancer.url}/v1/check", json={"key": "k"}) as r:
                        await r.read()

                await asyncio.gather(*(one() for _ in range(200)))
                before = cpu_s(balancer.proc.pid)
                await asyncio.gather(*(one() for _ in range(requests)))
                used = cpu_s(balancer.proc.pid) - before
        finally:
            await balancer.stop()
    finally:
        replica.kill()
        await replica.wait()
        shutil.rmtree(root, ignore_errors=True)
    return used / requests * 1e6


async def main(args: argparse.Namespace) -> None:
    reason = Box.available()
    if reason:
        raise SystemExit(f"sandboxes cannot run here: {reason}")
    data_dir = tmp_root()
    data_dir.chmod(0o755)
    roots: list[Path] = [data_dir]
    async with open_app(Settings(data_dir=data_dir)) as app:
        challenge = app.catalog.get(CHALLENGE)
        spec = challenge.environment_spec(app.coach.owner(BENCH))
        env = await app.coach.create_environment(BENCH, spec)
        try:
            repo = package_reference(challenge, DESIGN, data_dir / "repo")
            cold, warm = [], []
            for _ in range(args.build_reps):
                roots.append(tmp_root())
                cold.append(await to_first_request(app, env, repo, roots[-1]))
            for _ in range(args.reps):
                warm.append(await to_first_request(app, env, repo, roots[-1]))

            grader = HostedGrader(
                app.coach.grader,
                app.settings.data_dir,
                url_policy(app.settings),
                work_root=roots[-1],
            )

            async def hosted() -> tuple[str, Callable[[], Awaitable[None]]]:
                sub, _ = await grader.prepare(repo, challenge, scope="bench")
                service = await grader.start(sub, challenge, env)
                return service.url, lambda: sub.finish(service, env_secrets(env))

            async def direct() -> tuple[str, Callable[[], Awaitable[None]]]:
                cm = running(challenge.solution(DESIGN).module, env.bundle)
                service = await cm.__aenter__()
                return service.url, lambda: cm.__aexit__(None, None, None)

            rows: dict[str, list[tuple[float, float, float]]] = {"unsandboxed": [], "hosted": []}
            for _ in range(args.reps):
                for name, start in (("unsandboxed", direct), ("hosted", hosted)):
                    rows[name].append(await measure(start, args.rate, args.max_rate, args.seconds))
        finally:
            await app.coach.destroy_environment(env.id)
    for root in roots:
        shutil.rmtree(root, ignore_errors=True)
    balancer = [await balancer_cpu_us() for _ in range(args.reps)]
    report(args, cold, warm, rows, balancer)


def med(values: list[float]) -> float:
    return statistics.median(values)


def report(
    args: argparse.Namespace,
    cold: list[float],
    warm: list[float],
    rows: dict[str, list[tuple[float, float, float]]],
    balancer: list[float],
) -> None:
    print(f"hosted submissions — {CHALLENGE}/{DESIGN}, medians")
    print(
        f"  submission → first request, build not cached: {med(cold):6.1f} s "
        f"(n={len(cold)}: {', '.join(f'{v:.1f}' for v in cold)})"
    )
    print(
        f"  submission → first request, build cached:     {med(warm):6.1f} s "
        f"(n={len(warm)}: {', '.join(f'{v:.1f}' for v in warm)})"
    )
    p99 = {k: med([r[0] for r in v]) for k, v in rows.items()}
    tput = {k: med([r[1] for r in v]) for k, v in rows.items()}
    errs = {k: med([r[2] for r in v]) for k, v in rows.items()}
    print(f"  load: POST /v1/check over {KEYS:,} keys, {args.seconds:g} s per run, n={args.reps}")
    print(f"  {'':28} {'unsandboxed':>12} {'hosted':>12} {'ratio':>8}")
    print(
        f"  {f'p99 at {args.rate:g}/s (ms)':28} {p99['unsandboxed']:12.2f} {p99['hosted']:12.2f}"
        f" {p99['hosted'] / max(p99['unsandboxed'], 1e-9):8.2f}"
    )
    print(
        f"  {f'error rate at {args.rate:g}/s':28} {errs['unsandboxed']:12.4f} "
        f"{errs['hosted']:12.4f}"
    )
    print(
        f"  {f'ok/s at {args.max_rate:g}/s offered':28} {tput['unsandboxed']:12.0f} "
        f"{tput['hosted']:12.0f} {tput['hosted'] / max(tput['unsandboxed'], 1e-9):8.2f}"
    )
    print(
        f"  balancer alone: {med(balancer):.0f} µs of CPU per request "
        f"(n={len(balancer)}: {', '.join(f'{v:.0f}' for v in balancer)})"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--build-reps", type=int, default=2)
    parser.add_argument("--rate", type=float, default=400)
    parser.add_argument("--max-rate", type=float, default=3000)
    parser.add_argument("--seconds", type=float, default=6)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main(parser.parse_args()))
