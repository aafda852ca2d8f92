"""Grader validity for url-shortener: both reference designs pass; a cache that is never
invalidated fails the freshness check, with the same verdict twice."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.app import App
from grading.report import Status
from provisioning import Environment
from tests.challenges.grading import failures, grade_module, verdict

pytestmark = pytest.mark.slow
CHALLENGE = "url-shortener"


@pytest.mark.parametrize("design", ["cache_aside", "no_cache"])
async def test_reference_designs_pass(
    app: App, env: Environment, tmp_path: Path, design: str
) -> None:
    challenge = app.coach.challenge(CHALLENGE)
    report = await grade_module(
        app, CHALLENGE, challenge.solution(design).module, env, tmp_path, seed=11
    )
    assert report.passed, failures(report)
    assert report.metrics["cache.stale_reads"] == 0
    assert report.metrics["cache.reads_checked"] > 1000
    assert report.check("cache.fresh").status == Status.PASS
    # each store the design uses goes away; a cache is optional on the read path
    used = set(report.architecture.resources_used)
    assert used == ({"redis", "postgres"} if design == "cache_aside" else {"postgres"})
    assert {f.resource for f in report.faults} == used
    assert report.metrics.get("faults.redis.errors_during", 0) == 0
    assert report.metrics["faults.postgres.errors_during"] >= 0
    assert "PostgreSQL paused" in report.discussion
    assert report.check("links.resolve").status == Status.PASS
    assert report.metrics["links.verified"] >= 1000 and report.metrics["links.wrong"] == 0
    assert "Freshness" in report.discussion
    if design == "cache_aside":
        assert report.metrics["usage.redis_ops_per_request"] > 0.5
    assert challenge.tradeoffs()  # renders without a report


async def test_never_invalidated_cache_is_caught_with_the_same_verdict_twice(
    app: App, env: Environment, tmp_path: Path
) -> None:
    module = "tests.fixtures.flawed.shortener_never_invalidates"
    first = await grade_module(app, CHALLENGE, module, env, tmp_path / "1", seed=7)
    second = await grade_module(app, CHALLENGE, module, env, tmp_path / "2", seed=7)
    for report in (first, second):
        assert not report.passed
        fresh = report.check("cache.fresh")
        assert fresh.status == Status.FAIL
        assert report.metrics["cache.stale_reads"] > 0
        assert "had already" in fresh.detail
        assert report.check("contract.redirect").status == Status.PASS
    assert verdict(first) == verdict(second)


async def test_codes_that_collide_and_overwrite_are_caught(
    app: App, env: Environment, tmp_path: Path
) -> None:
    """Which links collide is the service's own dice (its codes are random), so what else a
    collision breaks (a hot link's freshness, a popular link's redirects under load) varies
    from grade to grade; the gate that names the flaw fails, with its metric."""
    module = "tests.fixtures.flawed.shortener_short_codes"
    report = await grade_module(app, CHALLENGE, module, env, tmp_path, seed=7)
    assert not report.passed  # a gate: a link that redirects elsewhere is a broken promise
    resolve = report.check("links.resolve")
    assert resolve.status == Status.FAIL, resolve.detail
    assert report.metrics["links.codes_reused"] > 0
    assert report.metrics["links.wrong"] > 0
    assert "handed out for two different URLs" in resolve.detail
    assert "handed out twice" in report.discussion
    assert report.check("contract.redirect").status == Status.PASS


async def test_invalidating_before_writing_is_caught_every_time(
    app: App, env: Environment, tmp_path: Path
) -> None:
    """The read/invalidate race is a database round trip wide: reads sent while every write
    is in flight catch it, not by luck, and the report states how likely that was."""
    module = "tests.fixtures.flawed.shortener_invalidates_first"
    report = await grade_module(app, CHALLENGE, module, env, tmp_path, seed=7)
    assert not report.passed
    fresh = report.check("cache.fresh")
    assert fresh.status == Status.FAIL, fresh.detail
    assert report.metrics["cache.stale_reads"] > 0
    assert report.metrics["cache.race_detection"] > 0.99
    assert "would have been seen with probability" in fresh.detail
