"""``cruscible demo``: the whole coach loop in the terminal, on real infrastructure, no tokens."""

from __future__ import annotations

import os
import time
from pathlib import Path

from rich.console import Console
from rich.rule import Rule
from rich.table import Table

from bot.adapters.console import ConsoleOutbox
from bot.app import App
from bot.core.outbox import Actor
from challenges.launch import running
from grading.report import Report

CHALLENGE = "rate-limiter"
DESIGNS = ("redis_lua", "postgres_upsert")  # counters in memory vs rows in a database
LEARNER = Actor("console", "ada", "ada")


def step(console: Console, n: int, text: str) -> None:
    console.print()
    console.print(Rule(f"[bold]{n}. {text}", align="left"))


def pids_alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        alive.append(pid)
    return alive


def comparison(reports: dict[str, Report]) -> Table:
    names = list(reports)
    table = Table("", *names, title="Same scenario, same seed: two designs side by side")
    metrics = sorted({k for r in reports.values() for k in r.metrics})
    table.add_row(
        "score", *(f"{r.score}/100 {'passed' if r.passed else 'failed'}" for r in reports.values())
    )
    table.add_row(
        "resources used",
        *(", ".join(r.architecture.resources_used) or "—" for r in reports.values()),
    )
    for key in metrics:
        table.add_row(key, *(str(reports[n].metrics.get(key, "—")) for n in names))
    for fault in {(f.resource, f.action) for r in reports.values() for f in r.faults}:
        table.add_row(
            f"{fault[0]} {fault[1]}",
            *(
                next(
                    (f.observed for f in reports[n].faults if (f.resource, f.action) == fault), "—"
                )
                for n in names
            ),
        )
    return table


async def run_demo(app: App, console: Console, *, seed: int, out_dir: Path) -> int:
    started = time.monotonic()
    coach = app.coach
    box = ConsoleOutbox(console)
    challenge = coach.challenge(CHALLENGE)

    step(console, 1, "The daily post")
    await box.post(coach.daily_post(CHALLENGE))

    step(console, 2, f"{LEARNER.name} presses Start")
    env = await coach.provision(LEARNER, CHALLENGE, box)
    env_pids = [int(p) for info in env.resources.values() if (p := info.extra.get("pid"))]

    reports: dict[str, Report] = {}
    service_pids: list[int] = []
    try:
        for n, design in enumerate(DESIGNS):
            solution = challenge.solution(design)
            step(
                console,
                3 if n == 0 else 6,
                f"Reference design {design!r} starts against the bundle",
            )
            console.print(f"[dim]{solution.summary}[/]")
            async with running(solution.module, env.bundle) as service:
                service_pids.append(service.pid)
                console.print(f"{design} is listening on {service.url} (pid {service.pid})")
                step(console, 4 if n == 0 else 6, f"{LEARNER.name} submits {service.url}")
                sub = await coach.submit(LEARNER, CHALLENGE, service.url, box, seed=seed)
            reports[design] = Report.from_dict(sub.report or {})
            step(console, 5 if n == 0 else 6, "Report files")
            for path in sorted(Path(sub.report_dir or ".").iterdir()):
                console.print(f"  {path}")
            dest = out_dir / design
            dest.mkdir(parents=True, exist_ok=True)
            for path in Path(sub.report_dir or ".").iterdir():
                (dest / path.name).write_bytes(path.read_bytes())
            console.print(f"  copied to {dest}/")
        step(console, 6, "The two designs, compared")
        console.print(comparison(reports))
    finally:
        step(console, 7, "Teardown")
        await coach.destroy_environment(env.id)
    left = pids_alive(env_pids + service_pids)
    if left:
        console.print(f"[red]processes left behind: {left}[/]")
        return 1
    console.print(
        f"Environment {env.id} destroyed; no server process left behind. "
        f"The demo took {time.monotonic() - started:.0f} s."
    )
    return 0
