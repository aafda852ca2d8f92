"""Grade a service module against a real environment, as the coach would."""

from __future__ import annotations

from pathlib import Path

from bot.app import App
from challenges.launch import running
from grading.report import Check, Report, Status
from provisioning import Environment


async def grade_module(
    app: App, challenge_id: str, module: str, env: Environment, out: Path, *, seed: int
) -> Report:
    challenge = app.coach.challenge(challenge_id)
    async with running(module, env.bundle) as service:
        graded = await app.coach.grader.grade(challenge, service.url, out, seed=seed, env=env)
    return graded.report


def failures(report: Report) -> list[str]:
    """The failed and errored checks with their details, for an assertion message."""
    return [f"{c.id}: {c.detail}" for c in report.checks if c.status in (Status.FAIL, Status.ERROR)]


# How fast a service answers, or comes back after a fault, on a shared two-core machine is
# noise, not the verdict under test: these may differ between two grades with one seed.
TIMING_CHECKS = frozenset({"load.latency", "faults.recovery"})


# Requests past the load generator's timeout, or answered 503/504 by a service's own timeouts:
# how slow a service was on a shared machine, not what it answered.
TIMING_ERRORS = frozenset({"timeout", "http_503", "http_504"})


def timed_out_only(check: Check) -> bool:
    """``load.errors`` (the steady run, no fault) failed by :data:`TIMING_ERRORS` alone."""
    kinds = check.evidence.get("errors_by_kind") or {}
    return check.id == "load.errors" and bool(kinds) and set(kinds) <= TIMING_ERRORS


def verdict(report: Report) -> tuple[bool, frozenset[str]]:
    """What must not change between two grades with the same seed: pass/fail and what failed,
    timing checks (and a steady run's errors that were all timeouts) aside."""
    failed = frozenset(
        c.id
        for c in report.checks
        if c.status in (Status.FAIL, Status.ERROR) and not timed_out_only(c)
    )
    return report.passed, failed - TIMING_CHECKS
