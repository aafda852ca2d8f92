"""Grader validity for rate-limiter: sound designs pass, a racy one fails the atomicity check."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.app import App
from grading.report import Status
from provisioning import Environment
from tests.challenges.grading import failures, grade_module, verdict

pytestmark = pytest.mark.slow
CHALLENGE = "rate-limiter"


@pytest.mark.parametrize("design", ["redis_lua", "postgres_upsert"])
async def test_reference_designs_pass(
    app: App, env: Environment, tmp_path: Path, design: str
) -> None:
    module = app.coach.challenge(CHALLENGE).solution(design).module
    report = await grade_module(app, CHALLENGE, module, env, tmp_path, seed=11)
    assert report.passed, failures(report)
    assert report.metrics["accuracy.over_admitted"] == 0
    assert report.check("accuracy.atomic").status == Status.PASS
    assert report.faults and report.faults[0].resource == "redis"
    assert report.check("accuracy.readmitted").status == Status.PASS
    assert report.metrics["accuracy.longest_lockout_s"] <= 11
    assert report.discussion


async def test_racy_limiter_is_caught_with_the_same_verdict_twice(
    app: App, env: Environment, tmp_path: Path
) -> None:
    module = "tests.fixtures.flawed.rate_limiter_racy"
    first = await grade_module(app, CHALLENGE, module, env, tmp_path / "1", seed=7)
    second = await grade_module(app, CHALLENGE, module, env, tmp_path / "2", seed=7)
    for report in (first, second):
        assert not report.passed
        atomic = report.check("accuracy.atomic")
        assert atomic.status == Status.FAIL
        assert report.metrics["accuracy.over_admitted"] > 0
        assert "admitted beyond RATE_LIMIT" in atomic.detail
        assert report.check("contract.allow-first").status == Status.PASS
    assert verdict(first) == verdict(second)


async def test_a_limiter_that_never_lets_a_refused_client_back_fails_twice(
    app: App, env: Environment, tmp_path: Path
) -> None:
    module = "tests.fixtures.flawed.rate_limiter_rearming"
    first = await grade_module(app, CHALLENGE, module, env, tmp_path / "1", seed=5)
    second = await grade_module(app, CHALLENGE, module, env, tmp_path / "2", seed=5)
    for report in (first, second):
        assert not report.passed  # a gate: refusing for good breaks the limit's promise
        readmitted = report.check("accuracy.readmitted")
        assert readmitted.status == Status.FAIL, readmitted.detail
        assert "still refused" in readmitted.detail
        assert report.metrics["accuracy.longest_lockout_s"] > 11
        assert report.metrics["accuracy.over_admitted"] == 0  # the "at most" side holds
        assert "locked out" in report.discussion
    assert verdict(first) == verdict(second)
