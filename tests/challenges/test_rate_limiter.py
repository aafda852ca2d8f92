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
    # each store the design uses is taken away for seconds; the others are left alone
    used = set(report.architecture.resources_used)
    assert report.faults and {f.resource for f in report.faults} == used
    assert used == ({"redis"} if design == "redis_lua" else {"postgres"})
    shares = [
        report.metrics[f"faults.{r}.{k}"] for r in used for k in ("admitted", "refused", "failed")
    ]
    assert sum(shares) == pytest.approx(1.0, abs=0.01)
    assert "while it was away the service" in report.faults[0].observed
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


async def test_a_limiter_that_never_lets_a_refused_client_back_fails(
    app: App, env: Environment, tmp_path: Path
) -> None:
    module = "tests.fixtures.flawed.rate_limiter_rearming"
    report = await grade_module(app, CHALLENGE, module, env, tmp_path, seed=5)
    assert not report.passed  # a gate: refusing for good breaks the limit's promise
    readmitted = report.check("accuracy.readmitted")
    assert readmitted.status == Status.FAIL, readmitted.detail
    assert "still refused" in readmitted.detail
    assert report.metrics["accuracy.longest_lockout_s"] > 11
    assert report.metrics["accuracy.over_admitted"] == 0  # the "at most" side holds
    assert "locked out" in report.discussion


async def test_answers_are_judged_by_body_not_status_alone(
    app: App, env: Environment, tmp_path: Path
) -> None:
    """A service that answers 200 HTML to everything earns nothing for load or faults."""
    module = "tests.fixtures.flawed.html_everywhere"
    report = await grade_module(app, CHALLENGE, module, env, tmp_path, seed=3)
    assert not report.passed
    errors = report.check("load.errors")
    assert errors.status == Status.FAIL and errors.points == 0, errors.detail
    assert errors.evidence["errors_by_kind"] == {
        "not_json": errors.evidence["errors_by_kind"]["not_json"]
    }
    assert report.metrics["load.error_rate"] == 1.0
    assert report.score == 5  # /healthz answered; nothing of the contract was kept
    latency = report.check("load.latency")
    assert latency.status == Status.FAIL and "does not count" in latency.detail
    assert report.check("accuracy.readmitted").status == Status.ERROR
    assert report.check("faults.recovery").status == Status.SKIP  # it uses no store
