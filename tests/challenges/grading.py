"""Grade a service module against a real environment, as the coach would."""

from __future__ import annotations

from pathlib import Path

from bot.app import App
from challenges.launch import running
from grading.report import Report, Status
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


def verdict(report: Report) -> tuple[bool, frozenset[str]]:
    """What must not change between two grades with the same seed: pass/fail and what failed,
    timing checks aside."""
    failed = frozenset(c.id for c in report.checks if c.status in (Status.FAIL, Status.ERROR))
    return report.passed, failed - TIMING_CHECKS
