"""Runs a scenario against a target, phase by phase, each within a time budget.

preflight → contract → load (with faults) → verification → fingerprint → scoring → report
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from grading import fingerprint, network
from grading.config import GradeConfig
from grading.http import Client, wait_healthy
from grading.report import Architecture, Report, Status
from grading.scenario import Grade, Injector, Progress, Scenario
from grading.timeline import Timeline
from grading.urlguard import Policy, TargetRefused, resolve_target
from provisioning import Environment

log = logging.getLogger(__name__)

PHASES = ("preflight", "contract", "load", "faults", "verification", "fingerprint", "scoring")
DEFAULT_BUDGETS_S = {
    "preflight": 15.0,
    "contract": 30.0,
    "load": 75.0,
    "verification": 30.0,
    "fingerprint": 10.0,
}


def overall_progress(phase: str, fraction: float) -> float:
    """Progress of the whole grade (0..1) from a phase and how far it is."""
    if phase not in PHASES:
        return 0.0
    return (PHASES.index(phase) + max(0.0, min(1.0, fraction))) / len(PHASES)


STATS_FLUSH_S = fingerprint.STATS_FLUSH_S


class CannotGrade(Exception):
    """The target could not be graded at all (refused, unreachable, never healthy)."""


@dataclass
class GradeOutcome:
    report: Report
    timeline: Timeline | None = None


def score(report: Report, config: GradeConfig) -> None:
    """Fill ``score`` and ``passed`` from the checks; skipped checks do not count."""
    counted = [c for c in report.checks if c.status != Status.SKIP]
    possible = sum(c.max_points for c in counted)
    earned = sum(c.points for c in counted)
    report.score = round(100 * earned / possible) if possible else 0
    gates_ok = all(
        c.status == Status.PASS for c in report.checks if c.id in config.gates
    ) and not any(c.status == Status.ERROR for c in report.checks)
    report.passed = gates_ok and report.score >= config.pass_mark


async def grade(
    scenario: Scenario,
    config: GradeConfig,
    url: str,
    *,
    seed: int = 0,
    env: Environment | None = None,
    injector: Injector | None = None,
    policy: Policy | None = None,
    progress: Progress | None = None,
    discuss: Callable[[Report], str] | None = None,
    processes: frozenset[str] | None = None,
) -> GradeOutcome:
    """Grade ``url``; raises :class:`CannotGrade` when preflight fails. ``processes``: the
    process names of a hosted submission the injector can kill (``process:<name>`` faults);
    ``None`` for a URL, whose process faults are skipped with the reason."""
    started = time.monotonic()
    budgets = {**DEFAULT_BUDGETS_S, **config.budgets_s}
    report = Report(
        challenge=config.challenge,
        target=url,
        environment=env.id if env else None,
        seed=seed,
        scale=config.scale,
    )

    def tell(phase: str, fraction: float) -> None:
        if progress is not None:
            progress(phase, fraction)

    tell("preflight", 0.0)
    try:
        target = await resolve_target(url, policy or Policy())
    except TargetRefused as exc:
        raise CannotGrade(str(exc)) from None
    async with Client(target) as http:
        try:
            await wait_healthy(http, deadline_s=budgets["preflight"])
        except Exception as exc:  # the reason is the message a learner acts on
            raise CannotGrade(str(exc)) from None
        tell("preflight", 1.0)

        g = Grade(
            config=config,
            target=target,
            http=http,
            report=report,
            env=env,
            injector=injector,
            progress=progress,
            checks=type(scenario).checks,
            processes=processes,
        )
        before = g.usage_before = await _snapshot(env, budgets["fingerprint"])
        after = None
        remote = network.is_remote(target, env)  # then the network's share is measured apart
        rtt_before = await network.round_trip_ms(http) if remote else None
        g.network_rtt_ms = rtt_before  # latency thresholds are judged on the service's share
        rtt_after = None
        for phase, method in (
            ("contract", scenario.contract),
            ("load", scenario.load),
            ("verification", scenario.verify),
        ):
            if phase == "verification" and env is not None:
                # Before the grader's own reads; PostgreSQL flushes table statistics ~1/s.
                await asyncio.sleep(STATS_FLUSH_S)
                after = await _snapshot(env, budgets["fingerprint"])
            g.phase = phase
            tell(phase, 0.0)
            try:
                await asyncio.wait_for(method(g), timeout=budgets[phase])
            except TimeoutError:
                g.check(
                    f"{phase}.budget",
                    f"{phase} finished within {budgets[phase]:.0f} s",
                    Status.ERROR,
                    detail=f"the {phase} phase was stopped after its budget of "
                    f"{budgets[phase]:.0f} s; checks it had not reached are missing",
                )
            except Exception as exc:
                log.exception("scenario phase %s crashed", phase)
                g.check(
                    f"{phase}.crashed",
                    f"{phase} phase ran to completion",
                    Status.ERROR,
                    detail=f"the grader could not finish the {phase} phase: {exc!r}",
                )
            if phase == "load" and remote:
                rtt_after = await network.round_trip_ms(http)
            tell(phase, 1.0)
        if remote:
            network.record(report, rtt_before, rtt_after, g.judged_on_service_share)

    tell("fingerprint", 0.0)
    if before is not None and after is not None:
        fp = fingerprint.diff(before, after, requests=g.requests_sent)
        report.architecture = Architecture(fp.resources_used, fp.signals)
    tell("fingerprint", 1.0)

    tell("scoring", 0.0)
    score(report, config)
    report.duration_s = round(time.monotonic() - started, 1)
    if discuss is not None:
        try:
            report.discussion = discuss(report)
        except Exception as exc:
            log.exception("discussion failed to render")
            report.discussion = f"(the discussion could not be written: {exc})"
    tell("scoring", 1.0)
    return GradeOutcome(report, g.timeline)


async def _snapshot(env: Environment | None, budget_s: float) -> fingerprint.Snapshot | None:
    if env is None:
        return None
    try:
        return await asyncio.wait_for(fingerprint.snapshot(env), timeout=budget_s)
    except Exception:
        log.warning("fingerprint snapshot failed", exc_info=True)
        return None
