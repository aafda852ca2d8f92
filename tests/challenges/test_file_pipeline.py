"""Grader validity for file-pipeline: both reference designs pass; a design that reports done
before the original is stored loses uploads while S3 restarts, one that splits lines before
parsing gets RFC 4180 files wrong, and one that refuses uploads over 1 MiB loses them (the first
with the same verdict twice). The grader's files agree with an RFC 4180 parser for any seed."""

from __future__ import annotations

import csv
import importlib
import io
import random
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.app import App
from grading.report import Report, Status
from provisioning import Environment
from tests.challenges.grading import failures, grade_module, verdict

CHALLENGE = "file-pipeline"
# Latency on a shared two-core machine is noise, not the verdict under test.
TIMING_CHECKS = frozenset({"load.latency", "pipeline.latency"})


def stable_verdict(report: Report) -> tuple[bool, frozenset[str]]:
    passed, failed = verdict(report)
    return passed, failed - TIMING_CHECKS


scenario = importlib.import_module("challenges.file-pipeline.scenario")
contract = importlib.import_module("challenges.file-pipeline.solutions.contract")


@settings(max_examples=12, deadline=None, database=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    size=st.integers(0, 40_000),
    malformed=st.booleans(),
)
def test_generated_files_mean_what_the_grader_expects(
    seed: int, size: int, malformed: bool
) -> None:
    """The expected rows and exact total of any generated file are what an RFC 4180 parser
    (Python's csv module, via the reference designs' rules) finds; a malformed one is refused."""
    gen = scenario.Generator(random.Random(seed), "n")
    upload = gen.csv(size, malformed=malformed)
    assert len(upload.body) <= max(size, 1_000)
    if malformed:
        with pytest.raises(contract.Malformed):
            contract.process(upload.body)
        return
    result = contract.process(upload.body)
    assert result.rows == upload.rows
    assert Decimal(result.amount_total) == upload.amount_total
    assert result.sha256 == upload.sha256


def test_the_sample_and_large_files_hold_the_quirks() -> None:
    gen = scenario.Generator(random.Random(3), "n")
    sample = scenario.FilePipelineScenario.sample_csv(None, gen)  # type: ignore[arg-type]
    assert sample.body.startswith(scenario.BOM + b"amount,")
    assert b'"line one\nline two"' in sample.body and b"\r\n\r\n" in sample.body
    result = contract.process(sample.body)
    assert (result.rows, Decimal(result.amount_total)) == (sample.rows, sample.amount_total)
    records = list(csv.reader(io.StringIO(sample.body.decode("utf-8-sig"), newline="")))
    in_floats = sum(float(r[0]) for r in records[1:] if r)
    assert Decimal(repr(in_floats)) != sample.amount_total  # a float sum cannot pass
    large = gen.csv(scenario.LARGE_CONTRACT_BYTES)
    assert 19_000_000 < len(large.body) <= scenario.MAX_UPLOAD


@pytest.mark.slow
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
    assert report.check("contract.large").status == Status.PASS
    assert report.metrics["contract.large_bytes"] > 19_000_000
    assert report.metrics["pipeline.refused"] == 0
    used = set(report.architecture.resources_used)
    assert {f.resource for f in report.faults} == used & {"s3", "queue"}  # where it lives
    assert ("queue" in report.architecture.resources_used) == (design == "store_first")
    assert "Did every accepted upload survive?" in report.discussion
    assert challenge.tradeoffs()  # renders without a report


@pytest.mark.slow
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


@pytest.mark.slow
async def test_splitting_lines_before_parsing_is_caught(
    app: App, env: Environment, tmp_path: Path
) -> None:
    module = "tests.fixtures.flawed.pipeline_splits_lines"
    report = await grade_module(app, CHALLENGE, module, env, tmp_path, seed=3)
    assert not report.passed  # gates
    result = report.check("contract.result")
    assert result.status == Status.FAIL
    assert "ended 'failed'" in result.detail
    correct = report.check("pipeline.correct")
    assert correct.status == Status.FAIL
    assert report.metrics["pipeline.wrong_results"] > 0
    assert report.metrics["pipeline.lost"] == 0  # it keeps every original
    assert report.check("pipeline.durable").status == Status.PASS


@pytest.mark.slow
async def test_refusing_uploads_over_one_mib_is_caught(
    app: App, env: Environment, tmp_path: Path
) -> None:
    module = "tests.fixtures.flawed.pipeline_refuses_large"
    report = await grade_module(app, CHALLENGE, module, env, tmp_path, seed=5)
    assert not report.passed  # gates
    large = report.check("contract.large")
    assert large.status == Status.FAIL
    assert "POST answered 413" in large.detail
    durable = report.check("pipeline.durable")
    assert durable.status == Status.FAIL
    assert "refused for good" in durable.detail
    assert report.metrics["pipeline.refused"] > 0
    assert report.metrics["pipeline.refused_max_bytes"] > 4_000_000
    assert report.metrics["pipeline.lost"] >= report.metrics["pipeline.refused"]
    assert report.check("contract.result").status == Status.PASS
    assert report.check("pipeline.correct").status == Status.PASS
