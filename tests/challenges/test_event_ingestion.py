"""Grader validity for event-ingestion: both reference designs count exactly through
retries and paused stores; a service without dedupe double counts retried batches, one that
counts an event_id repeated inside a batch twice and one whose dedupe forgets after two
seconds are each caught by the exactness gate (the first with the same verdict twice)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.app import App
from grading.report import Status
from provisioning import Environment
from tests.challenges.grading import failures, grade_module, verdict

pytestmark = pytest.mark.slow
CHALLENGE = "event-ingestion"


@pytest.mark.parametrize("design", ["postgres_exact", "redis_counters"])
async def test_reference_designs_pass(
    app: App, env: Environment, tmp_path: Path, design: str
) -> None:
    module = app.coach.challenge(CHALLENGE).solution(design).module
    report = await grade_module(app, CHALLENGE, module, env, tmp_path, seed=11)
    assert report.passed, failures(report)
    assert report.metrics["stats.miscounted"] == 0
    assert report.check("stats.exact").status == Status.PASS
    assert report.check("contract.retry").status == Status.PASS
    used = set(report.architecture.resources_used)
    assert {f.resource for f in report.faults} == used & {"redis", "postgres"}  # where it lives
    # the data reached the contract's limits: 500-event batches, repeats, late retries
    assert report.metrics["stats.largest_batch"] == 500
    assert report.metrics["stats.repeats_in_batches"] > 0
    assert report.metrics["stats.retry_gap_max_s"] > 10
    assert report.discussion


async def test_double_counting_is_caught_with_the_same_verdict_twice(
    app: App, env: Environment, tmp_path: Path
) -> None:
    module = "tests.fixtures.flawed.ingestion_double_count"
    first = await grade_module(app, CHALLENGE, module, env, tmp_path / "1", seed=7)
    second = await grade_module(app, CHALLENGE, module, env, tmp_path / "2", seed=7)
    for report in (first, second):
        assert not report.passed
        exact = report.check("stats.exact")
        assert exact.status == Status.FAIL
        assert "too high: double counts" in exact.detail
        assert report.metrics["stats.miscounted"] > 0
        assert report.check("contract.retry").status == Status.FAIL
        assert report.check("contract.stats-window").status == Status.PASS
    assert verdict(first) == verdict(second)


async def test_repeats_inside_a_batch_are_caught(
    app: App, env: Environment, tmp_path: Path
) -> None:
    module = "tests.fixtures.flawed.ingestion_repeats_in_batch"
    report = await grade_module(app, CHALLENGE, module, env, tmp_path, seed=3)
    assert not report.passed  # a gate
    retry = report.check("contract.retry")
    assert retry.status == Status.FAIL
    assert "one new event_id three times" in retry.detail
    exact = report.check("stats.exact")
    assert exact.status == Status.FAIL
    assert "too high: double counts" in exact.detail
    assert report.metrics["stats.miscounted"] > 0
    assert report.check("contract.stats-window").status == Status.PASS


async def test_a_dedupe_that_forgets_after_two_seconds_is_caught(
    app: App, env: Environment, tmp_path: Path
) -> None:
    module = "tests.fixtures.flawed.ingestion_short_ttl"
    report = await grade_module(app, CHALLENGE, module, env, tmp_path, seed=5)
    assert not report.passed  # a gate
    exact = report.check("stats.exact")
    assert exact.status == Status.FAIL
    assert "too high: double counts" in exact.detail
    assert report.metrics["stats.miscounted"] > 0
    assert report.metrics["stats.retry_gap_max_s"] > 10
    # quick retries and repeats inside a batch are deduplicated: only late ones double
    assert report.check("contract.retry").status == Status.PASS
