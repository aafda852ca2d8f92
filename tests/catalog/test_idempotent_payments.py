"""Grader validity for idempotent-payments: both reference designs pass; a checkout that ignores
the key (retries charge twice) and one that checks then acts (duplicates at once charge twice)
are each caught, the same way twice."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.app import App
from grading.report import Report, Status
from provisioning import Environment
from tests.challenges.grading import failures, grade_module, verdict

pytestmark = pytest.mark.slow
CHALLENGE = "idempotent-payments"


@pytest.mark.parametrize("design", ["postgres_tx", "redis_lock"])
async def test_reference_designs_pass(
    app: App, env: Environment, tmp_path: Path, design: str
) -> None:
    module = app.coach.challenge(CHALLENGE).solution(design).module
    report = await grade_module(app, CHALLENGE, module, env, tmp_path, seed=11)
    assert report.passed, failures(report)
    for metric in ("double_charged", "lost", "replay_mismatch", "unsettled"):
        assert report.metrics[f"payments.{metric}"] == 0, metric
    assert report.metrics["payments.concurrent_charges"] == 1
    assert report.metrics["payments.retried"] > 0
    used = {"postgres"} if design == "postgres_tx" else {"postgres", "redis"}
    assert set(report.architecture.resources_used) == used
    assert {f.resource for f in report.faults} == used  # faulted where it lives
    assert report.discussion


async def grade_twice(app: App, env: Environment, tmp_path: Path, flaw: str) -> list[Report]:
    module = f"tests.fixtures.flawed.idempotent_payments_{flaw}"
    first = await grade_module(app, CHALLENGE, module, env, tmp_path / "1", seed=7)
    second = await grade_module(app, CHALLENGE, module, env, tmp_path / "2", seed=7)
    assert verdict(first) == verdict(second)
    return [first, second]


async def test_a_checkout_ignoring_the_key_is_caught_twice(
    app: App, env: Environment, tmp_path: Path
) -> None:
    for report in await grade_twice(app, env, tmp_path, "no_key"):
        assert not report.passed  # a gate
        double = report.check("payments.no-double-charge")
        assert double.status == Status.FAIL, double.detail
        assert "orders charged more than once" in double.detail
        assert report.metrics["payments.double_charged"] > 0
        assert report.metrics["payments.replay_mismatch"] > 0
        assert report.check("contract.replay").status == Status.FAIL
        assert report.check("contract.checkout").status == Status.PASS


async def test_a_check_then_act_checkout_is_caught_twice(
    app: App, env: Environment, tmp_path: Path
) -> None:
    for report in await grade_twice(app, env, tmp_path, "check_then_act"):
        assert not report.passed  # a gate: the duplicates' charges count as double charges
        concurrent = report.check("accuracy.concurrent")
        assert concurrent.status == Status.FAIL, concurrent.detail
        assert report.metrics["payments.concurrent_charges"] > 1
        assert report.check("payments.no-double-charge").status == Status.FAIL
        assert report.metrics["payments.double_charged"] >= 1
        assert report.check("contract.replay").status == Status.PASS  # sequential retries hold


async def test_a_checkout_that_answers_before_it_charges_is_caught_twice(
    app: App, env: Environment, tmp_path: Path
) -> None:
    for report in await grade_twice(app, env, tmp_path, "record_first"):
        assert not report.passed  # a gate: a 201 without a charge
        lost = report.check("payments.no-lost-charge")
        assert lost.status == Status.FAIL, lost.detail
        assert "payments missing either" in lost.detail
        assert report.metrics["payments.lost"] > 0
        assert report.metrics["payments.double_charged"] == 0  # the "at most once" side holds
