"""Grader validity for notification-service on the contract's whole domain: resends at a
client's realistic gaps (up to tens of seconds, across the runs and after the load), events
refused during the load sent again as the contract's client would, and store outages of
seconds. Events refused for good are caught with the same verdict twice (one seed)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import aiohttp
import psycopg
import pytest

from bot.app import App
from challenges.launch import running
from grading.provider import ProviderAdmin
from grading.report import Status
from provisioning import Environment, Resource
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


async def test_a_claim_left_sending_is_taken_over_by_a_resend_once_its_lease_ran_out(
    app: App, env: Environment
) -> None:
    """``sync_delivery``: a request that delivered but could not record it (PostgreSQL paused,
    no pooled connection) leaves its claim ``sending`` and answers 503. A resend after the
    claim's lease takes it over and answers 202; the provider replays its first answer, so the
    user is notified once. A claim still within its lease is left to its request: refused."""
    provider = ProviderAdmin.of(env.admin(Resource.PROVIDER))
    await provider.script(())
    await provider.reset()
    stale, held = (
        {"event_id": str(uuid.uuid4()), "type": "order_placed", "user_id": "u1", "data": {}}
        for _ in range(2)
    )
    module = app.coach.challenge(CHALLENGE).solution("sync_delivery").module
    async with (
        running(module, env.bundle) as service,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http,
        await psycopg.AsyncConnection.connect(env.bundle["DATABASE_URL"], autocommit=True) as db,
    ):

        async def post(event: dict[str, object]) -> int:
            async with http.post(f"{service.url}/v1/events", data=json.dumps(event)) as resp:
                return resp.status

        assert await post(stale) == 202
        await db.execute(  # as if its request had delivered, then failed to record it
            "UPDATE notify_sync SET state = 'sending', updated_at = now() - interval '1 minute'"
            " WHERE event_id = %s",
            (stale["event_id"],),
        )
        await db.execute(  # a request still sending it
            "INSERT INTO notify_sync (event_id, state) VALUES (%s, 'sending')",
            (held["event_id"],),
        )
        assert await post(stale) == 202
        assert await post(held) == 503
        cur = await db.execute(
            "SELECT state FROM notify_sync WHERE event_id = %s", (stale["event_id"],)
        )
        assert await cur.fetchone() == ("delivered",)
    calls = [c for c in await provider.calls() if c.key == stale["event_id"]]
    assert [(c.status, c.replayed) for c in calls] == [(200, False), (200, True)]
    assert not [c for c in await provider.calls() if c.key == held["event_id"]]


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
