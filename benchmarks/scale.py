"""The job engine at scale on this machine: claim-to-start latency, grades per hour and a
command's answer time with 1, 2 and 4 worker processes, and how long a killed worker's grade
takes to restart elsewhere — printed side by side.

    python benchmarks/scale.py [--queued 1000] [--per-run 300] [--kills 3]

A real PostgreSQL is started for the run (a fresh database per measurement). Workers are real
``cruscible worker`` processes (``tests.scale.node``: the worker's own code with a grade that
probes a local service for as long as its URL says, here 0 s, so the engine is measured, not a
grade). Submissions are added through the front end's queue (:class:`bot.core.jobs.EngineQueue`)
of this process, one learner each.

- **claim-to-start**: ``--queued`` grades wait before one worker (one slot) starts; for each
  grade after the first, the time from the previous grade's end to its start (the slot's idle
  time: settling the job, claiming the next, marking it running), p50 and p99.
- **grades per hour**: 1, 2 or 4 worker processes (one slot each) started, ``--per-run``
  zero-length grades queued (their jobs held), then all made due at once; grades divided by the
  time from the first start to the last end.
  Next to it, the p99 of a learner's ``results`` command answered by this process meanwhile.
- **kill -9 → restart**: a 10 s grade on one of two workers; the worker is killed; the time until
  the other starts it (``attempts`` 2 in the store), with the heartbeat and the silence that
  marks a worker dead printed beside it (``CRUSCIBLE_WORKER_HEARTBEAT``,
  ``CRUSCIBLE_WORKER_STALLED_AFTER``).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from aiohttp import web
from sqlalchemy import func, select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.app import App, open_app  # noqa: E402
from bot.config import Settings  # noqa: E402
from bot.core.jobs import EngineQueue  # noqa: E402
from bot.core.outbox import Actor  # noqa: E402
from bot.store import Submission, User  # noqa: E402
from tests.grading.realservers import Postgres, postgres_server  # noqa: E402
from tests.scale.conftest import HEARTBEAT_S, STALLED_AFTER_S, Workers  # noqa: E402

_dbs = itertools.count(1)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def fresh_db(pg: Postgres) -> str:
    name = f"bench_{os.getpid()}_{next(_dbs)}"
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return pg.dsn.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}"


@asynccontextmanager
async def front(db_url: str, root: Path) -> AsyncIterator[App]:
    data = Path(tempfile.mkdtemp(prefix="front-", dir=root))
    data.chmod(0o755)
    settings = Settings(
        database_url=db_url,
        data_dir=data,
        queue_limit=0,
        worker_heartbeat=HEARTBEAT_S,
        worker_stalled_after=STALLED_AFTER_S,
        log_level="WARNING",
    )
    async with open_app(settings, reconcile=False) as app:
        yield app


def workers_for(db_url: str) -> Workers:
    root = Path(tempfile.mkdtemp(prefix="cruscible-bench-scale-"))
    root.chmod(0o755)
    return Workers(db_url, root)


async def queue_grades(app: App, n: int, url: str, prefix: str, *, held: bool = False) -> None:
    """``n`` grades of ``url``, one learner each, through the front end's queue; ``held``: each
    job deferred as the queue defers it, but due in an hour (:func:`release` makes them due)."""
    async with app.store.session() as s:
        users = [
            User(platform="console", platform_id=f"{prefix}{i}", display_name=f"L{i}")
            for i in range(n)
        ]
        s.add_all(users)
    queue = app.coach.queue
    assert isinstance(queue, EngineQueue)
    await queue.open()
    later = datetime.now(UTC) + timedelta(hours=1)
    for user in users:
        sub = Submission(user_id=user.id, challenge="rate-limiter", url=url, seed=1)
        if not held:
            await queue.add(sub)
            continue
        await queue._insert(sub, None)  # the queue's own steps, the job held
        await queue._grade_task.configure(
            queueing_lock=f"sub-{sub.id}", schedule_at=later
        ).defer_async(sub_id=sub.id)


async def release(db_url: str) -> None:
    """Make every held job due now (workers find them at their next poll)."""
    async with await psycopg.AsyncConnection.connect(
        db_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True
    ) as conn:
        await conn.execute(
            "UPDATE procrastinate_jobs SET scheduled_at = now() WHERE status = 'todo'"
        )


async def finished(app: App, n: int, within: float) -> None:
    async with asyncio.timeout(within):
        while True:
            async with app.store.session() as s:
                done = await s.scalar(
                    select(func.count()).select_from(Submission).where(Submission.status == "done")
                )
            if (done or 0) >= n:
                return
            await asyncio.sleep(0.25)


async def spans(app: App) -> list[tuple[float, float]]:
    async with app.store.session() as s:
        rows = await s.execute(
            select(Submission.started_at, Submission.finished_at)
            .where(Submission.status == "done")
            .order_by(Submission.started_at)
        )
        return [(a.timestamp(), b.timestamp()) for a, b in rows if a and b]


async def claim_to_start(pg: Postgres, url: str, queued: int) -> dict[str, float]:
    db = fresh_db(pg)
    pool = workers_for(db)
    try:
        async with front(db, pool.root) as app:
            await queue_grades(app, queued, url, "c")
            pool.start(concurrency=1)
            await finished(app, queued, within=60 + queued * 0.5)
            runs = await spans(app)
    finally:
        pool.stop()
    gaps = [(b[0] - a[1]) * 1000 for a, b in itertools.pairwise(runs)]
    grade_ms = [(end - start) * 1000 for start, end in runs]
    return {
        "p50_ms": statistics.median(gaps),
        "p99_ms": pct(gaps, 0.99),
        "grade_p50_ms": statistics.median(grade_ms),
    }


async def throughput(pg: Postgres, url: str, n_workers: int, per_run: int) -> dict[str, float]:
    db = fresh_db(pg)
    pool = workers_for(db)
    try:
        async with front(db, pool.root) as app:
            for _ in range(n_workers):
                pool.start(concurrency=1)
            await pool.registered(n_workers, within=120)  # not their start-up measured
            actor = Actor("console", "t0", "L0")
            acks: list[float] = []

            async def commands() -> None:
                while True:
                    began = time.perf_counter()
                    await app.coach.results(actor)
                    acks.append((time.perf_counter() - began) * 1000)
                    await asyncio.sleep(0.05)

            await queue_grades(app, per_run, url, "t", held=True)
            asking = asyncio.ensure_future(commands())
            try:
                await release(db)
                await finished(app, per_run, within=60 + per_run * 0.5)
            finally:
                asking.cancel()
            runs = await spans(app)
    finally:
        pool.stop()
    wall = max(end for _, end in runs) - min(start for start, _ in runs)
    return {"per_hour": len(runs) / wall * 3600, "ack_p99_ms": pct(acks, 0.99), "acks": len(acks)}


async def kill_restart(pg: Postgres, port: int, pids: dict[str, int], kills: int) -> list[float]:
    db = fresh_db(pg)
    pool = workers_for(db)
    took: list[float] = []
    try:
        async with front(db, pool.root) as app:
            pool.start()
            pool.start()
            await pool.registered(2, within=60)
            for k in range(kills):
                tag = f"kill{k}"
                await queue_grades(app, 1, f"http://127.0.0.1:{port}/10/{tag}", tag)
                async with asyncio.timeout(30):
                    while tag not in pids:  # noqa: ASYNC110
                        await asyncio.sleep(0.01)
                victim = pool.by_pid(pids[tag])
                os.kill(victim.pid, signal.SIGKILL)
                killed = time.perf_counter()
                victim.wait(10)
                async with asyncio.timeout(60):
                    while True:
                        async with app.store.session() as s:
                            attempts = await s.scalar(
                                select(func.max(Submission.attempts)).where(
                                    Submission.status == "running"
                                )
                            )
                        if (attempts or 0) >= 2:
                            break
                        await asyncio.sleep(0.02)
                took.append(time.perf_counter() - killed)
                await app.coach.queue.idle()
                pool.start()  # two workers again
                await pool.registered(2, within=60)
    finally:
        pool.stop()
    return took


async def main(queued: int, per_run: int, kills: int) -> None:
    pids: dict[str, int] = {}

    async def probe(request: web.Request) -> web.Response:
        pids.setdefault(request.match_info["tag"], int(request.headers.get("X-Worker", "0")))
        return web.Response(text="ok")

    server = web.Application()
    server.router.add_get("/{seconds}/{tag}/probe", probe)
    runner = web.AppRunner(server, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}/0/none"
    try:
        with postgres_server() as pg:
            print(f"cores: {os.cpu_count()}; PostgreSQL, workers and this front end on this host")
            latency = await claim_to_start(pg, url, queued)
            rates = {n: await throughput(pg, url, n, per_run) for n in (1, 2, 4)}
            restarts = await kill_restart(pg, port, pids, kills)
    finally:
        await runner.cleanup()

    print(f"\nclaim-to-start, {queued} grades queued, 1 worker (1 slot)")
    print(f"  p50 {latency['p50_ms']:.1f} ms   p99 {latency['p99_ms']:.1f} ms   "
          f"(a zero-length grade itself: p50 {latency['grade_p50_ms']:.1f} ms)")  # fmt: skip
    print(f"\n{'worker processes':>18} {'grades/hour':>12} {'results p99 ms':>15} {'answers':>8}")
    for n, r in rates.items():
        print(f"{n:>18} {r['per_hour']:>12,.0f} {r['ack_p99_ms']:>15.1f} {r['acks']:>8}")
    print(
        f"\nkill -9 → restarted elsewhere (heartbeat {HEARTBEAT_S:g} s, silent after "
        f"{STALLED_AFTER_S:g} s): "
        + ", ".join(f"{t:.1f} s" for t in restarts)
        + f"; median {statistics.median(restarts):.1f} s"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queued", type=int, default=1000)
    parser.add_argument("--per-run", type=int, default=300)
    parser.add_argument("--kills", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.queued, args.per_run, args.kills))
