"""``cruscible demo``: the whole coach loop in the terminal, on real infrastructure, no tokens."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.rule import Rule
from rich.table import Table

from bot.adapters.console import ConsoleOutbox
from bot.app import App, url_policy
from bot.core.outbox import Actor
from challenges.catalog import Challenge
from challenges.launch import running
from grading.report import Report
from provisioning import Environment
from provisioning.sandbox import Box

CHALLENGE = "rate-limiter"
DESIGNS = ("redis_lua", "postgres_upsert")  # counters in memory vs rows in a database
HOSTED = "redis_lua"  # submitted as code: built and run in a sandbox next to the environment
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


@contextlib.asynccontextmanager
async def hosted(
    app: App, console: Console, challenge: Challenge, design: str, env: Environment
) -> AsyncIterator[str]:
    """Reference design ``design`` packaged as a learner's repository, built and run in a
    sandbox next to ``env``; yields the balancer's URL, stops everything after."""
    from bot.core.hosted import HostedGrader, package_reference
    from provisioning.hosted.submission import env_secrets

    grader = HostedGrader(app.coach.grader, app.settings.data_dir, url_policy(app.settings))

    def say(line: str) -> None:
        console.print(f"[dim]{escape(line)}[/]", highlight=False)

    with tempfile.TemporaryDirectory(prefix="cruscible-demo-repo-") as repo:
        package_reference(challenge, design, Path(repo))
        files = sorted(p.name for p in Path(repo).iterdir())
        console.print(f"{LEARNER.name}'s repository: {', '.join(files)}")
        console.print(Path(repo, "cruscible.toml").read_text().strip(), markup=False)
        sub, _ = await grader.prepare(repo, challenge, scope=app.coach.owner(LEARNER), say=say)
    service = await grader.start(sub, challenge, env, say=say)
    iso = service.box.isolation
    console.print(
        f"sandbox: runs as {iso.get('user')}, network {iso.get('net')}, cgroup "
        f"{iso.get('cgroup')}: {iso.get('limits')}"
    )
    try:
        yield service.url
    finally:
        await sub.finish(service, env_secrets(env))
        console.print(f"{sub.id} stopped; its logs: cruscible logs {sub.id}")


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
            as_code = design == HOSTED and (why := Box.available()) is None
            step(
                console,
                3 if n == 0 else 6,
                f"Reference design {design!r} "
                + ("is submitted as code" if as_code else "starts against the bundle"),
            )
            console.print(f"[dim]{solution.summary}[/]")
            if design == HOSTED and not as_code:
                console.print(f"[yellow]not submitted as code here: {why}[/]")
            if as_code:
                async with hosted(app, console, challenge, design, env) as url:
                    step(console, 4 if n == 0 else 6, f"{LEARNER.name} submits {url}")
                    sub = await coach.submit(LEARNER, CHALLENGE, url, box, seed=seed)
            else:
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
