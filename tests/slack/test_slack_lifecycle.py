"""A workspace's life with the app: retried deliveries handled once, uninstalls and revoked
tokens that end its schedules and boards, token rotation for scheduled posts, and Socket Mode
reconnecting when Slack asks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from bot.adapters.slack.channels import PLATFORM, SlackChannels
from bot.adapters.slack.main import serve
from bot.app import App
from bot.core.communities import Communities
from bot.core.message import Message
from bot.core.outbox import DeliveryFailed, DirectMessageClosed
from bot.scheduler import Operations
from bot.store import Community, Contest, LeaderboardMessage
from tests.slack.conftest import Workspace, install, until
from tests.slack.fakeslack import APP_TOKEN, BOT_TOKEN, OAUTH_TEAM, FakeSlack

HOME_OPENED = {"type": "app_home_opened", "user": "U3", "tab": "home", "channel": "DU3"}


def deactivated(communities: Communities, team: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return (await communities.get("slack", team)).channel_id is None

    return check


def jobs(ops: Operations) -> set[str]:
    """The ids of the jobs planned (the scheduler is not started: they wait to be stored)."""
    return {job.id for job in ops.scheduler.get_jobs()}


async def sockets_at_least(fake: FakeSlack, n: int) -> bool:
    return fake.sockets >= n


@pytest.fixture
def channels(slack: Workspace, app: App) -> Iterator[SlackChannels]:
    registered = SlackChannels(slack.bot.client_for)
    app.coach.channels.register(PLATFORM, registered)
    yield registered
    app.coach.channels.unregister(PLATFORM)


async def test_a_retried_event_or_command_is_handled_once(slack: Workspace) -> None:
    fake, sender = slack.fake, slack.sender
    first = await sender.event(HOME_OPENED, event_id="EvHOME")
    again = await sender.event(HOME_OPENED, event_id="EvHOME", retry=(1, "http_timeout"))
    assert (first.status, again.status) == (200, 200)  # the retry is acknowledged…
    await fake.wait_for(lambda c: c.method == "views.publish")
    await sender.event(HOME_OPENED)  # a new opening (new event id) is handled
    await slack.settle()
    await asyncio.sleep(0.3)  # a second publish of EvHOME would have been made by now
    assert len(fake.calls_to("views.publish")) == 2  # …and not processed again

    body = sender.command_body("help", user="U1", channel="C1")
    await sender.command_again(body, retry=(0, ""))
    await sender.command_again(body, retry=(1, "timeout"))
    await fake.wait_for(lambda c: c.method == "response_url")
    await slack.settle()
    assert len(fake.calls_to("response_url")) == 1


async def test_an_uninstall_ends_the_workspace_schedules_and_boards(
    slack: Workspace, app: App, channels: SlackChannels
) -> None:
    fake, coach, team = slack.fake, app.coach, "T0BYE"
    fake.add_channel("CBYE")
    community = await coach.communities.get("slack", team)
    ops = Operations(coach)  # its scheduler follows the settings, as when running
    coach.communities.on_change(ops.plan_daily)
    coach.contests.on_change(ops.plan_contest)
    try:
        community = await coach.communities.configure(
            community.id, channel_id="CBYE", ping_role="SBYE"
        )
        start = datetime.now(UTC) + timedelta(days=3)
        contest = await coach.contests.create(
            community, "rate-limiter", start, start + timedelta(days=7), created_by=f"{team}:U1"
        )
        await coach.boards.place(community, "all")
        planned = jobs(ops)
        assert f"daily:{community.id}" in planned
        assert f"contest:{contest.id}:open" in planned

        answered = await slack.sender.event({"type": "app_uninstalled"}, team=team)
        fake.uninstall("T0TEST")  # Slack revokes the token at once
        assert answered.status == 200
        await slack.settle()
        await until(deactivated(coach.communities, team))
        calls = len(fake.calls)

        inactive = await coach.communities.get("slack", team)
        assert (inactive.channel_id, inactive.ping_role) == (None, None)
        assert not any(job.endswith(f":{community.id}") for job in jobs(ops))
        assert not any(job.startswith(f"contest:{contest.id}:") for job in jobs(ops))
        async with coach.store.session() as s:
            assert (await s.get_one(Contest, contest.id)).cancelled_at is not None
            boards = await s.scalars(
                select(LeaderboardMessage).where(LeaderboardMessage.community_id == community.id)
            )
            assert list(boards) == []
        await coach.boards.refresh()
        with pytest.raises(LookupError, match="removed from workspace T0BYE"):
            await slack.bot.client_for(team)
        with pytest.raises(DeliveryFailed, match="removed from workspace T0BYE"):
            await channels.post(inactive, Message(title="late"), channel_id="CBYE")
        with pytest.raises(DirectMessageClosed):
            await channels.dm(inactive, f"{team}:U1", Message(title="your environment expires"))
        # not one call more for it (other workspaces' boards may still be refreshed)
        assert [c for c in fake.calls[calls:] if c.channel == "CBYE" or c.is_dm] == []
    finally:
        coach.communities.off_change(ops.plan_daily)
        coach.contests.off_change(ops.plan_contest)


async def test_scheduled_posts_rotate_the_token_then_a_revoked_bot_stops(
    oauth_slack: Workspace, app: App
) -> None:
    fake, coach = oauth_slack.fake, app.coach
    fake.rotation = True
    fake.token_lifetime_s = 60  # under the 120 minutes before expiry when bolt refreshes
    await install(oauth_slack)
    (installed,) = [t for t, team in fake.tokens.items() if team == OAUTH_TEAM]
    assert installed.startswith("xoxe.xoxb-")

    channels = SlackChannels(oauth_slack.bot.client_for)
    home = Community(id=0, platform="slack", platform_id=OAUTH_TEAM, channel_id="COAUTH")
    fake.expires[installed] = time.time() - 1  # the install's token has expired
    await channels.post(home, Message(title="Today's challenge"))
    (refresh,) = [c for c in fake.calls_to("oauth.v2.access") if "refresh_token" in c.args]
    assert refresh.args["grant_type"] == "refresh_token"
    (post,) = fake.calls_to("chat.postMessage")
    assert post.answer["ok"] and post.token not in (installed, BOT_TOKEN)
    assert post.token == refresh.answer["access_token"]

    # a request from the workspace is served with the refreshed token as well
    await oauth_slack.sender.command("admin show", user="U9", team=OAUTH_TEAM)
    info = await fake.wait_for(lambda c: c.method == "users.info")
    assert info.answer["ok"] and fake.tokens.get(info.token or "") == OAUTH_TEAM

    # a refresh Slack refuses is a delivery failure that says so (and nothing is posted)
    refresh_tokens = dict(fake.refresh_tokens)
    fake.refresh_tokens.clear()
    with pytest.raises(DeliveryFailed, match="token could not be refreshed.*invalid_refresh_token"):
        await channels.post(home, Message(title="with a refused refresh"))
    with pytest.raises(DirectMessageClosed, match="could not be refreshed"):
        await channels.dm(home, f"{OAUTH_TEAM}:U1", Message(title="with a refused refresh"))
    fake.refresh_tokens.update(refresh_tokens)
    assert len(fake.calls_to("chat.postMessage")) == 1

    community = await coach.communities.get("slack", OAUTH_TEAM)
    await coach.communities.configure(community.id, channel_id="COAUTH")
    revoked = {"type": "tokens_revoked", "tokens": {"oauth": [], "bot": ["UBOT2"]}}
    await oauth_slack.sender.event(revoked, team=OAUTH_TEAM)
    await until(deactivated(coach.communities, OAUTH_TEAM))
    store = oauth_slack.bot.bolt.installation_store
    assert store is not None
    assert await store.async_find_bot(enterprise_id=None, team_id=OAUTH_TEAM) is None
    with pytest.raises(DeliveryFailed):
        await channels.post(home, Message(title="after the revocation"))
    assert len(fake.calls_to("chat.postMessage")) == 1

    await install(oauth_slack)  # installed again: its new token works at once
    await channels.post(home, Message(title="back"))
    assert fake.calls_to("chat.postMessage")[-1].answer["ok"]


async def test_socket_mode_reconnects_when_slack_asks(
    app: App, fake: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("SLACK_SIGNING_SECRET", "SLACK_CLIENT_ID", "SLACK_CLIENT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLACK_BOT_TOKEN", BOT_TOKEN)
    monkeypatch.setenv("SLACK_APP_TOKEN", APP_TOKEN)
    monkeypatch.setenv("SLACK_API_URL", fake.api_url)
    server = asyncio.create_task(serve(app, socket_mode=True))
    try:
        for n, reason in enumerate(["refresh_requested", "link_disabled"], start=1):
            payload = {
                "team_id": "T0SOCKET",
                "channel_id": "C1",
                "user_id": "U1",
                "user_name": "u1",
                "command": "/cruscible",
                "text": "help",
                "response_url": fake.response_url(f"socket-{n}"),
                "trigger_id": fake.trigger(f"trigger-socket-{n}"),
            }
            envelope = await fake.send_envelope("slash_commands", payload)
            await fake.wait_for(
                lambda c, key=f"socket-{n}": c.method == "response_url" and c.args["key"] == key
            )
            assert any(ack.get("envelope_id") == envelope for ack in fake.socket_acks)
            await fake.disconnect(reason)  # Slack is about to close this connection
            await until(lambda n=n: sockets_at_least(fake, n + 1))
        assert len(fake.calls_to("apps.connections.open")) == 3  # a fresh URL each time
        # an event Slack redelivers over the socket (retry_attempt) is handled once as well
        event = {
            "type": "event_callback",
            "team_id": "T0SOCKET",
            "api_app_id": "A1",
            "event_id": "EvSOCKET",
            "event_time": int(time.time()),
            "event": HOME_OPENED,
        }
        await fake.send_envelope("events_api", event)
        await fake.send_envelope("events_api", event, retry_attempt=1, retry_reason="timeout")
        await fake.wait_for(lambda c: c.method == "views.publish")
        payload["trigger_id"] = fake.trigger("trigger-socket-last")
        payload["response_url"] = fake.response_url("socket-last")
        await fake.send_envelope("slash_commands", payload)  # and it keeps serving
        await fake.wait_for(lambda c: c.method == "response_url" and c.args["key"] == "socket-last")
        assert len(fake.calls_to("views.publish")) == 1
    finally:
        server.cancel()
        with pytest.raises(asyncio.CancelledError):
            await server
