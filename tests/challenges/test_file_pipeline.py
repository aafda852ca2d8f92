"""Grader validity for file-pipeline: both reference designs pass; a design that reports done
before the original is stored loses uploads while S3 restarts, with the same verdict twice."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.app import App
from grading.report import Report, Status
from provisioning import Environment
from tests.challenges.grading import failures, grade_module, verdict

pytestmark = pytest.mark.slow
CHALLENGE = "file-pipeline"
# Latency on a shared two-core machine is noise, not the verdict under test.
TIMING_CHECKS = frozenset({"load.latency", "pipeline.latency"})


def stable_verdict(report: Report) -> tuple[bool, frozenset[str]]:
    passed, failed = verdict(report)
    return passed, failed - TIMING_CHECKS


@pytest.mark.parametrize("design", ["store_first", "process_immediately"])
async def test_reference_designs_pass(
    app: App, env: Environment, tmp_path: Path, design: str
) -> None:
    challenge = app.coach.challenge(CHALLENGE)
    report = await grade_module(
        app, CHALLENGE, challenge.solution(design).module, env, tmp_path, seed=11
    )
    assert report.passed, failures(report)
    assert report.metrics["pipeline.accepted"] > 40
    assert report.metrics["pipeline.lost"] == 0
    assert report.metrics["pipeline.wrong_results"] == 0
    assert report.check("contract.stored").status == Status.PASS
    assert {f.resource for f in report.faults} == {"s3", "queue"}
    assert ("queue" in report.architecture.resources_used) == (design == "store_first")
    assert "Did every accepted upload survive?" in report.discussion
    assert challenge.tradeoffs()  # renders without a report


async def test_done_before_stored_is_caught_with_the_same_verdict_twice(
    app: App, env: Environment, tmp_path: Path
) -> None:
    module = "tests.fixtures.flawed.pipeline_done_before_stored"
    first = await grade_module(app, CHALLENGE, module, env, tmp_path / "1", seed=7)
    second = await grade_module(app, CHALLENGE, module, env, tmp_path / "2", seed=7)
    for report in (first, second):
        assert not report.passed
        durable = report.check("pipeline.durable")
        assert durable.status == Status.FAIL
        assert report.metrics["pipeline.lost"] > 0
        assert report.metrics["pipeline.missing_originals"] > 0
        assert "without their original" in durable.detail
        assert report.check("contract.result").status == Status.PASS
        assert report.check("pipeline.correct").status == Status.PASS
    assert stable_verdict(first) == stable_verdict(second)
