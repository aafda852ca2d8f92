"""Grader validity for notification-service on the contract's whole domain: resends at a
client's realistic gaps (up to tens of seconds, across the runs and after the load), events
refused during the load sent again as the contract's client would, and store outages of
seconds. Events refused for good are caught with the same verdict twice (one seed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.app import App
from grading.report import Status
from provisioning import Environment
from tests.challenges.grading import failures, grade_module, verdict

pytestmark = pytest.mark.slow
CHALLENGE = "notification-service"


async def test_resends_past_a_short_lived_claim_reach_the_provider_and_notify_once(
    app: App, env: Environment, tmp_path: Path
) -> None:
    """A service whose Redis claim forgets an event_id after 2 s delivers late resends again,
    with the same key and body: the provider replays its first answer (``provider.replayed``),
    so the user is notified once and no duplicate is counted. Its Redis is killed for seconds
    during the fault run; it fails open and keeps accepting."""
    module = "tests.fixtures.notification_short_dedup"
    report = await grade_module(app, CHALLENGE, module, env, tmp_path, seed=7)
    assert report.metrics["ingest.resend_gap_max_s"] >= 10  # far past its 2 s claim
    assert report.metrics["provider.replayed"] > 0, failures(report)
    assert report.check("delivery.no-duplicates").status == Status.PASS, failures(report)
    assert report.metrics["delivery.duplicates"] == 0
    assert report.metrics["delivery.lost"] == 0, failures(report)
    redis = [f for f in report.faults if f.resource == "redis"]
    assert redis and redis[0].healed_at_s - redis[0].at_s >= 2.0


async def test_events_refused_during_the_load_are_retried_and_accepted(
    app: App, env: Environment, tmp_path: Path
) -> None:
    """``sync_delivery`` refuses events while the provider is down and PostgreSQL paused; each
    is sent again after the load and accepted then, so none is lost."""
    module = app.coach.challenge(CHALLENGE).solution("sync_delivery").module
    report = await grade_module(app, CHALLENGE, module, env, tmp_path, seed=7)
    assert report.metrics["ingest.refused"] > 0
    assert report.metrics["ingest.never_accepted"] == 0
    assert report.metrics["delivery.lost"] == 0, failures(report)
    assert report.check("delivery.no-loss").status == Status.PASS


async def test_events_refused_for_good_count_as_lost_with_the_same_verdict_twice(
    app: App, env: Environment, tmp_path: Path
) -> None:
    """A service that answers 503 to about 5 % of valid events every time: each is retried
    after the load and still refused, so the no-loss gate fails and says how many."""
    module = "tests.fixtures.flawed.notification_refuses_some"
    first = await grade_module(app, CHALLENGE, module, env, tmp_path / "1", seed=7)
    second = await grade_module(app, CHALLENGE, module, env, tmp_path / "2", seed=7)
    for report in (first, second):
        assert not report.passed
        loss = report.check("delivery.no-loss")
        assert loss.status == Status.FAIL
        never = report.metrics["ingest.never_accepted"]
        assert never > 0
        assert report.metrics["delivery.lost"] >= never
        assert f"{never} events never accepted after 3 retries" in loss.detail
        assert report.metrics["delivery.duplicates"] == 0
    assert verdict(first) == verdict(second)
