"""The Slack ``Channels`` (posting without an interaction), the admin contest and leaderboard
commands, and submissions that count for their workspace — on the real bolt app and the fake
Web API, with a scripted grader (no real grade)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from bot.adapters.slack.channels import PLATFORM, SlackChannels
from bot.app import App
from bot.core.channels import MessageGone
from bot.core.message import Message
from bot.core.outbox import DirectMessageClosed
from bot.logs import SECRETS
from bot.scheduler import Operations, jobs
from bot.store import Community, Submission
from tests.community.support import ScriptedGrader
from tests.slack.conftest import Workspace
from tests.slack.fakeslack import BOT_TOKEN, TEAM, Call

HOME = Community(
    id=0, platform="slack", platform_id=TEAM, channel_id="CHOME", ping_role="SLEARNERS"
)


def posts(slack: Workspace, channel: str) -> list[Call]:
    return [c for c in slack.fake.calls_to("chat.postMessage") if c.channel == channel]


@pytest.fixture
def channels(slack: Workspace, app: App) -> Iterator[SlackChannels]:
    """The bot's channels registered with the coach, as ``serve`` does."""
    registered = SlackChannels(slack.bot.client_for)
    app.coach.channels.register(PLATFORM, registered)
    yield registered
    app.coach.channels.unregister(PLATFORM)


async def test_post_thread_and_ping(slack: Workspace) -> None:
    channels = SlackChannels(slack.bot.client_for)
    secret = f"s3cret-{secrets.token_hex(8)}"
    SECRETS.add(secret)

    ref = await channels.post(HOME, Message(title="Daily", body=f"pw {secret}"), ping=True)
    (pinged,) = posts(slack, "CHOME")
    assert ref == f"CHOME/{pinged.answer['ts']}"
    assert pinged.token == BOT_TOKEN
    assert pinged.args["text"].startswith("<!subteam^SLEARNERS> ")
    assert pinged.args["blocks"][0]["text"]["text"] == "<!subteam^SLEARNERS>"
    assert secret not in pinged.dump  # masked, like an Outbox's post

    # no ping asked, or no group set: nothing in it notifies anyone
    await channels.post(HOME, Message(title="<!channel> Board <@U1>"))
    unset = Community(id=0, platform="slack", platform_id=TEAM, channel_id="CHOME")
    await channels.post(unset, Message(title="Contest open"), ping=True)
    for call in posts(slack, "CHOME")[1:]:  # a header is plain text: it mentions no one
        mrkdwn = [call.args["text"], *(json.dumps(b) for b in call.args["blocks"][1:])]
        assert not any("<!" in text or "<@" in text for text in mrkdwn)

    # a thread under a ref, under a bare ts (the community's channel), another channel
    in_thread = await channels.post(HOME, Message(title="ada scored 90/100"), thread=ref)
    ts = ref.split("/")[1]
    threaded = posts(slack, "CHOME")[-1]
    assert threaded.args["thread_ts"] == ts and in_thread.startswith("CHOME/")
    await channels.post(HOME, Message(title="Trade-offs"), thread=ts)
    assert posts(slack, "CHOME")[-1].args["thread_ts"] == ts
    other = await channels.post(HOME, Message(title="Standings"), channel_id="COTHER")
    assert other.startswith("COTHER/") and "thread_ts" not in posts(slack, "COTHER")[0].args


async def test_edit_and_a_message_gone(slack: Workspace) -> None:
    channels = SlackChannels(slack.bot.client_for)
    secret = f"s3cret-{secrets.token_hex(8)}"
    SECRETS.add(secret)
    ref = await channels.post(HOME, Message(title="Leaderboard", body="1. ada"))
    await channels.edit(HOME, ref, Message(title="Leaderboard", body=f"1. bob {secret}"))
    (update,) = slack.fake.calls_to("chat.update")
    assert (update.channel, update.args["ts"]) == tuple(ref.split("/"))
    assert "1. bob" in update.dump and secret not in update.dump

    del slack.fake.messages["CHOME", ref.split("/")[1]]  # deleted in Slack
    with pytest.raises(MessageGone):
        await channels.edit(HOME, ref, Message(title="Leaderboard"))
    with pytest.raises(MessageGone):
        await channels.edit(HOME, "123.456", Message(title="never posted"))


async def test_dm_and_closed_dms(slack: Workspace) -> None:
    channels = SlackChannels(slack.bot.client_for)
    ref = await channels.dm(HOME, f"{TEAM}:U7", Message(title="Your environment expires soon"))
    (opened,) = slack.fake.calls_to("conversations.open")
    assert opened.args["users"] == "U7"
    (sent,) = posts(slack, "DU7")
    assert ref == f"DU7/{sent.answer['ts']}"
    assert await channels.dm(None, f"{TEAM}:U8", Message(title="no community")) != ref

    slack.fake.dm_closed.add("U9")
    with pytest.raises(DirectMessageClosed):
        await channels.dm(HOME, f"{TEAM}:U9", Message(title="closed"))
    assert not posts(slack, "DU9")


async def test_admins_create_contests_and_place_boards(
    slack: Workspace, app: App, channels: SlackChannels
) -> None:
    fake, sender, team = slack.fake, slack.sender, "T0CONTEST"
    community = await app.coach.communities.get("slack", team)
    community = await app.coach.communities.configure(community.id, channel_id="CCONTEST")
    start = (datetime.now(UTC) + timedelta(days=30)).strftime("%Y-%m-%dT09:00")
    end = (datetime.now(UTC) + timedelta(days=37)).strftime("%Y-%m-%dT09:00")

    await sender.command(f"admin contest create rate-limiter {start} {end}", user="U1", team=team)
    await fake.wait_for(lambda c: c.method == "response_url" and "Only workspace admins" in c.dump)
    assert await app.coach.contests.of(community) == []

    await sender.command(
        f"admin contest create rate-limiter {start} {end} <#CRACE|race>", user="UADMIN", team=team
    )
    answer = await fake.wait_for(
        lambda c: c.method == "response_url" and "rate-limiter (upcoming)" in c.dump
    )
    assert answer.args["response_type"] == "ephemeral"
    (contest,) = await app.coach.contests.of(community)
    assert (contest.challenge, contest.channel_id) == ("rate-limiter", "CRACE")
    assert contest.created_by == f"{team}:UADMIN"

    await sender.command("contest", user="U1", team=team)  # learners see it
    await fake.wait_for(lambda c: c.method == "response_url" and f"Contest #{contest.id}" in c.dump)

    # a self-updating board: posted once, then edited in place
    await sender.command("admin leaderboard", user="UADMIN", team=team)
    await fake.wait_for(lambda c: c.method == "response_url" and "Leaderboard placed" in c.dump)
    (board,) = posts(slack, "CCONTEST")
    assert "Leaderboard" in board.dump
    await sender.command("admin leaderboard rate-limiter", user="UADMIN", team=team)
    update = await fake.wait_for(lambda c: c.method == "chat.update")
    assert (update.channel, update.args["ts"]) == ("CCONTEST", board.answer["ts"])
    assert len(posts(slack, "CCONTEST")) == 1
    await app.coach.contests.cancel(community, contest.id)


async def test_a_submission_counts_for_its_workspace_under_the_scheduled_post(
    slack: Workspace, app: App, channels: SlackChannels, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app.coach, "grader", ScriptedGrader())  # grading is not the point
    fake, team, coach = slack.fake, "T0SCHED", app.coach
    now = datetime.now(UTC)
    community = await coach.communities.get("slack", team)
    community = await coach.communities.configure(
        community.id,
        channel_id="CSCHED",
        post_time=now.strftime("%H:%M"),
        timezone="UTC",
        ping_role="SDAILY",
    )

    # the daily post, made by the scheduler's job through the registered SlackChannels
    ops = Operations(coach)
    jobs.register(ops.key, ops)
    try:
        await jobs.daily(ops.key, community.id)
    finally:
        jobs.unregister(ops.key)
    (daily,) = posts(slack, "CSCHED")
    ts = daily.answer["ts"]
    assert daily.args["text"].startswith("<!subteam^SDAILY> Today's challenge")
    record = await coach.communities.daily_post(community.id, now.date())
    assert record is not None and record.message_ref == f"CSCHED/{ts}"

    url = "http://127.0.0.1:9/u5"
    await slack.sender.command(f"submit {record.challenge} <{url}>", user="U5", team=team)
    card = await fake.wait_for(lambda c: c.channel == "CSCHED" and "scored" in c.dump)
    await slack.settle()
    assert card.args["thread_ts"] == ts
    async with coach.store.session() as s:
        sub = await s.scalar(select(Submission).where(Submission.url == url))
    assert sub is not None and sub.status == "done"
    assert sub.community_id == community.id
    assert sub.thread == f"CSCHED/{ts}"  # where a grade resumed after a restart posts


async def test_admins_choose_the_user_group_to_ping(slack: Workspace, app: App) -> None:
    fake, sender, team = slack.fake, slack.sender, "T0PING"
    await sender.command("admin ping <!subteam^SGROUP|@learners>", user="UADMIN", team=team)
    await fake.wait_for(lambda c: c.method == "response_url" and "SGROUP" in c.dump)
    assert (await app.coach.communities.get("slack", team)).ping_role == "SGROUP"
    await sender.command("admin ping <#CNOPE|general>", user="UADMIN", team=team)
    await fake.wait_for(lambda c: c.method == "response_url" and "not a user group" in c.dump)
    await sender.command("admin ping off", user="UADMIN", team=team)
    await slack.settle()
    assert (await app.coach.communities.get("slack", team)).ping_role is None

    await sender.command("help", user="U1", team=team)
    help_ = await fake.wait_for(
        lambda c: c.method == "response_url" and "Cruscible commands" in c.dump
    )
    assert "/cruscible admin contest create" in help_.dump
