"""Grader validity for cache-slow-api: both reference designs pass; a cache that never expires
and a service that calls the upstream on every read are each caught, the same way twice."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.app import App
from grading.report import Status
from provisioning import Environment
from tests.challenges.grading import failures, grade_module, verdict

pytestmark = pytest.mark.slow
CHALLENGE = "cache-slow-api"


@pytest.mark.parametrize("design", ["ttl_cache", "refresh_ahead"])
async def test_reference_designs_pass(
    app: App, env: Environment, tmp_path: Path, design: str
) -> None:
    module = app.coach.challenge(CHALLENGE).solution(design).module
    report = await grade_module(app, CHALLENGE, module, env, tmp_path, seed=11)
    assert report.passed, failures(report)
    assert report.metrics["cache.stale_reads"] == 0
    assert report.metrics["cache.worst_staleness_s"] < 2
    assert report.metrics["upstream.calls_per_read"] <= 0.3
    assert report.metrics["cache.stampede_calls"] <= 3
    assert report.architecture.resources_used == ["redis"]
    assert {f.resource for f in report.faults} == {"redis"}
    assert report.discussion


async def test_a_cache_that_never_expires_is_caught_twice(
    app: App, env: Environment, tmp_path: Path
) -> None:
    module = "tests.fixtures.flawed.cache_slow_api_no_expiry"
    first = await grade_module(app, CHALLENGE, module, env, tmp_path / "1", seed=7)
    second = await grade_module(app, CHALLENGE, module, env, tmp_path / "2", seed=7)
    for report in (first, second):
        assert not report.passed  # staleness is a gate
        staleness = report.check("cache.staleness")
        assert staleness.status == Status.FAIL, staleness.detail
        assert report.metrics["cache.stale_reads"] > 0
        assert report.metrics["cache.worst_staleness_s"] > 2
        assert "cache.stale_reads" in staleness.detail
        assert report.check("contract.update-seen").status == Status.FAIL
        assert report.check("contract.not-found").status == Status.FAIL
        assert report.check("upstream.calls-per-read").status == Status.PASS
        assert "more than 2 s after it changed" in report.discussion
    assert verdict(first) == verdict(second)


async def test_a_service_without_a_cache_is_caught_twice(
    app: App, env: Environment, tmp_path: Path
) -> None:
    module = "tests.fixtures.flawed.cache_slow_api_no_cache"
    first = await grade_module(app, CHALLENGE, module, env, tmp_path / "1", seed=5)
    second = await grade_module(app, CHALLENGE, module, env, tmp_path / "2", seed=5)
    for report in (first, second):
        assert not report.passed  # calls per read is a gate
        calls = report.check("upstream.calls-per-read")
        assert calls.status == Status.FAIL, calls.detail
        assert report.metrics["upstream.calls_per_read"] >= 0.95
        assert report.metrics["upstream.throttled"] > 0
        assert "upstream.calls_per_read" in calls.detail
        assert report.metrics["cache.stampede_calls"] == 50
        assert report.check("cache.single-flight").status == Status.FAIL
        assert report.check("load.errors").status == Status.FAIL
        # most reads refused (throttled upstream): the staleness promise is not kept either
        staleness = report.check("cache.staleness")
        assert staleness.status == Status.FAIL
        assert "of the reads were answered as the contract says" in staleness.detail
        assert report.check("faults.availability").status == Status.SKIP  # it uses no Redis
    assert verdict(first) == verdict(second)
