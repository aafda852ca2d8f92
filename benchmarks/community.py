"""Command acknowledgement latency with many learners while real grades are queued; prints figures.

    python benchmarks/community.py [--learners 200] [--gradings 20] [--seconds 40]

The whole bot core in one process, as in production (one event loop): a real SQLite store with
a history of graded submissions, the real catalog, provisioning and grader. One environment
(PostgreSQL + Redis) runs the ``redis_lua`` reference rate limiter; ``--gradings`` learners
submit its URL, so the queue holds that many real grades (contract, 2,000 checks/s of load,
scoring, report and plot) running ``grading_concurrency`` at a time. Meanwhile ``--learners``
simulated learners each issue a command (today, list, results, leaderboard, env) every 2-4 s
through ``bot.core.commands.dispatch``. A command's latency is the time to its first reply —
the acknowledgement a chat platform waits for. Also printed: event-loop lag (a 10 ms ticker's
lateness), commands refused by the rate limit, queue positions shown, grades finished. The
grades still queued when the window ends are cancelled through the ``cancel`` command.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

# benchmarks/provisioning.py would shadow the ``provisioning`` package when run as a script.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

from bot.app import App, open_app  # noqa: E402
from bot.config import Settings  # noqa: E402
from bot.core.commands import dispatch  # noqa: E402
from bot.core.message import Message  # noqa: E402
from bot.core.outbox import Actor  # noqa: E402
from bot.store import Submission  # noqa: E402
from challenges.launch import running  # noqa: E402

COMMANDS = ("today", "list", "results", "leaderboard", "leaderboard rate-limiter", "env")
CHALLENGES = ("rate-limiter", "url-shortener", "file-pipeline", "event-ingestion")


class TimedOutbox:
    """Records when the first reply (the acknowledgement) came, and every progress edit."""

    def __init__(self) -> None:
        self.first_reply: float | None = None
        self.edits: list[str] = []
        self.refused = False

    async def post(self, msg: Message, *, thread: str | None = None) -> str:
        return "post"

    async def reply(self, msg: Message) -> str:
        if self.first_reply is None:
            self.first_reply = time.perf_counter()
            self.refused = msg.body.startswith("slow down")
        return "reply"

    async def edit(self, ref: str, msg: Message) -> None:
        self.edits.append(msg.body)

    async def dm(self, actor: Actor, msg: Message) -> str:
        return "dm"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def seed_history(app: App, learners: list[Actor], rng: random.Random) -> None:
    """Ten graded submissions per learner over the last month: boards have work to do."""
    now = datetime.now(UTC)
    for actor in learners:
        user = await app.coach.user(actor)
        async with app.store.session() as s:
            for _ in range(10):
                at = now - timedelta(hours=rng.uniform(1, 24 * 30))
                s.add(
                    Submission(
                        user_id=user.id,
                        challenge=rng.choice(CHALLENGES),
                        url="http://127.0.0.1:9/",
                        seed=0,
                        status="done",
                        score=rng.randint(0, 100),
                        passed=False,
                        created_at=at,
                        finished_at=at,
                    )
                )


async def learner(
    app: App, actor: Actor, until: float, rng: random.Random, out: dict[str, list]
) -> None:
    await asyncio.sleep(rng.uniform(0, 2))
    while time.perf_counter() < until:
        command = rng.choice(COMMANDS)
        box = TimedOutbox()
        began = time.perf_counter()
        await dispatch(app.coach, actor, command, box)
        if box.first_reply is not None:
            out["refused" if box.refused else command].append(box.first_reply - began)
        await asyncio.sleep(rng.uniform(2, 4))


async def loop_lag(until: float, lags: list[float]) -> None:
    while time.perf_counter() < until:
        began = time.perf_counter()
        await asyncio.sleep(0.01)
        lags.append(time.perf_counter() - began - 0.01)


async def main(args: argparse.Namespace) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="cruscible-bench-"))
    data_dir.chmod(0o755)
    rng = random.Random(7)
    settings = Settings(data_dir=data_dir)
    try:
        async with open_app(settings) as app:
            coach = app.coach
            learners = [Actor("bench", str(i), f"learner{i}") for i in range(args.learners)]
            await seed_history(app, learners, rng)
            host = Actor("bench", "host", "host")
            spec = coach.challenge("rate-limiter").environment_spec(
                coach.owner(host), timedelta(hours=1)
            )
            env = await coach.create_environment(host, spec)
            solution = coach.challenge("rate-limiter").solution("redis_lua")
            try:
                async with running(solution.module, env.bundle) as service:
                    submitters = learners[: args.gradings]
                    boxes = [TimedOutbox() for _ in submitters]
                    grades = [
                        asyncio.create_task(
                            dispatch(coach, a, f"submit rate-limiter {service.url}", box)
                        )
                        for a, box in zip(submitters, boxes, strict=True)
                    ]
                    while sum((await coach.queue.counts()).values()) < args.gradings:  # noqa: ASYNC110
                        await asyncio.sleep(0.05)
                    queued = await coach.queue.counts()
                    began = time.perf_counter()
                    until = began + args.seconds
                    latencies: dict[str, list[float]] = {c: [] for c in (*COMMANDS, "refused")}
                    lags: list[float] = []
                    await asyncio.gather(
                        loop_lag(until, lags),
                        *(
                            learner(app, a, until, random.Random(i), latencies)
                            for i, a in enumerate(learners)
                        ),
                    )
                    left = await coach.queue.counts()
                    for actor in submitters:
                        await dispatch(coach, actor, "cancel", TimedOutbox())
                    await asyncio.gather(*grades)
            finally:
                await coach.destroy_environment(env.id)
            report(args, settings, queued, left, latencies, lags, boxes)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def report(
    args: argparse.Namespace,
    settings: Settings,
    queued: dict[str, int],
    left: dict[str, int],
    latencies: dict[str, list[float]],
    lags: list[float],
    boxes: list[TimedOutbox],
) -> None:
    ms = 1000.0
    accepted = [v for c, vs in latencies.items() if c != "refused" for v in vs]
    print(
        f"cores: {os.cpu_count()}  grading concurrency: {settings.grading_concurrency}  "
        f"learners: {args.learners}  window: {args.seconds:.0f} s"
    )
    print(
        f"queue at the start: {queued.get('running', 0)} running, {queued.get('queued', 0)} "
        f"queued; at the end: {left.get('running', 0)} running, {left.get('queued', 0)} queued"
    )
    finished = sum(1 for b in boxes if any(e == "graded" for e in b.edits))
    positions = sorted({e for b in boxes for e in b.edits if e.startswith("queued")})
    print(
        f"real grades finished in the window: {finished}; position updates seen: {len(positions)}"
    )
    print(f"{'command':26} {'n':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for command, values in [*latencies.items(), ("all accepted", accepted)]:
        if values:
            print(
                f"{command:26} {len(values):6d} {pct(values, 0.5) * ms:8.1f} "
                f"{pct(values, 0.99) * ms:8.1f} {max(values) * ms:8.1f}"
            )
    print(
        f"event-loop lag: p50 {pct(lags, 0.5) * ms:.1f} ms, p99 {pct(lags, 0.99) * ms:.1f} ms, "
        f"max {max(lags) * ms:.1f} ms over {len(lags)} ticks"
    )
    verdict = "meets" if pct(accepted, 0.99) < 0.25 else "misses"
    print(f"acknowledgement p99 {pct(accepted, 0.99) * ms:.1f} ms {verdict} the 250 ms target")
    print(
        f"throughput: {len(accepted) / args.seconds:.1f} commands/s; mean {statistics.mean(accepted) * ms:.1f} ms"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--learners", type=int, default=200)
    parser.add_argument("--gradings", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=40.0)
    asyncio.run(main(parser.parse_args()))
