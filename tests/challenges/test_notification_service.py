"""Grader validity for notification-service: both reference designs pass; a service that
never retries and one that acknowledges queue messages before the work is done both lose
accepted events, and the loss check says so."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.app import App
from grading.report import Status
from provisioning import Environment
from tests.challenges.grading import failures, grade_module

pytestmark = pytest.mark.slow
CHALLENGE = "notification-service"


@pytest.mark.parametrize("design", ["sync_delivery", "queue_worker"])
async def test_reference_designs_pass(
    app: App, env: Environment, tmp_path: Path, design: str
) -> None:
    module = app.coach.challenge(CHALLENGE).solution(design).module
    report = await grade_module(app, CHALLENGE, module, env, tmp_path, seed=11)
    assert report.passed, failures(report)
    assert report.metrics["delivery.lost"] == 0
    assert report.metrics["delivery.duplicates"] == 0
    assert report.check("delivery.no-loss").status == Status.PASS
    used = set(report.architecture.resources_used)
    assert {f.resource for f in report.faults} == used & {"queue", "redis", "postgres"}
    assert report.faults  # every reference design lives somewhere the grader can fault
    assert report.discussion


@pytest.mark.parametrize("fixture", ["notification_no_retry", "notification_ack_before_process"])
async def test_losing_designs_are_caught(
    app: App, env: Environment, tmp_path: Path, fixture: str
) -> None:
    module = f"tests.fixtures.flawed.{fixture}"
    report = await grade_module(app, CHALLENGE, module, env, tmp_path, seed=7)
    assert not report.passed
    loss = report.check("delivery.no-loss")
    assert loss.status == Status.FAIL
    assert report.metrics["delivery.lost"] > 0
    assert "never reached the provider" in loss.detail
    assert report.check("contract.accept").status == Status.PASS
    assert report.metrics["delivery.duplicates"] == 0


async def test_a_short_timeout_retried_with_the_same_key_is_not_a_duplicate(
    app: App, env: Environment, tmp_path: Path
) -> None:
    """The provider honours idempotency keys: abandoning a slow call after 0.5 s and
    retrying it with the same key notifies once, so the verdict no longer hangs on a
    hidden timeout threshold. Whether every retry of a slow call lands while the first is
    still in flight (answered 409) and the design gives up on it is the machine's timing
    (a few losses on a busy two-core machine, none on a quiet one): losses stay rare, a
    duplicate never appears."""
    module = "tests.fixtures.notification_short_timeout"
    report = await grade_module(app, CHALLENGE, module, env, tmp_path, seed=7)
    assert report.check("delivery.no-duplicates").status == Status.PASS, failures(report)
    assert report.metrics["delivery.duplicates"] == 0
    accepted = report.metrics["delivery.accepted"]
    assert report.metrics["delivery.lost"] <= 0.01 * accepted, failures(report)
