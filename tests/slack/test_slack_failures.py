"""What Slack refuses becomes the coach's neutral failures, with a reason an admin can act on;
the response_url and trigger_id limits are kept; admin settings cannot silently break."""

from __future__ import annotations

import time

import aiohttp
import pytest

from bot.adapters.slack.channels import SlackChannels
from bot.adapters.slack.failures import delivering
from bot.adapters.slack.outbox import RESPONSE_URL_USES, SlackOutbox
from bot.app import App
from bot.core.channels import MessageGone
from bot.core.message import Message
from bot.core.outbox import DeliveryFailed, DirectMessageClosed, InteractionExpired
from bot.store import Community
from tests.slack.conftest import Workspace
from tests.slack.fakeslack import TEAM

WORKSPACE = Community(id=0, platform="slack", platform_id=TEAM, channel_id="CHOME")
CARD = Message(title="ada scored 90/100", body="the score card")


def answered(slack: Workspace, method: str) -> list[str]:
    return [str(c.answer.get("error", "ok")) for c in slack.fake.calls_to(method)]


async def test_refused_posts_raise_neutral_failures_naming_the_fix(slack: Workspace) -> None:
    fake, channels = slack.fake, SlackChannels(slack.bot.client_for)
    fake.add_channel("GPRIVATE", member=False)
    fake.add_channel("COLD", "old-news", archived=True)
    fake.add_channel("COUTSIDE", "daily-challenge", member=False)
    cases = {
        "CGONE": "channel CGONE was not found",  # deleted, or never existed
        "GPRIVATE": "`/invite @Cruscible` there",  # private, the bot was not added
        "COLD": "#old-news is archived: unarchive it",  # named: it still exists
    }
    for channel, reason in cases.items():
        with pytest.raises(DeliveryFailed, match=reason) as caught:
            await channels.post(WORKSPACE, CARD, channel_id=channel)
        assert not caught.value.transient
    # a public channel the bot is not in: fine with chat:write.public, refused without it
    await channels.post(WORKSPACE, CARD, channel_id="COUTSIDE")
    fake.scopes.discard("chat:write.public")
    with pytest.raises(DeliveryFailed, match="Cruscible is not in #daily-challenge: `/invite"):
        await channels.post(WORKSPACE, CARD, channel_id="COUTSIDE")
    assert answered(slack, "chat.postMessage") == [
        "channel_not_found",
        "channel_not_found",
        "is_archived",
        "ok",
        "not_in_channel",
    ]

    # what our rendering never sends, Slack refuses, and the adapter says so
    with pytest.raises(DeliveryFailed, match="too long for Slack"):
        async with delivering("CHOME"):
            await slack.bot.bolt.client.chat_postMessage(channel="CHOME", text="x" * 40_001)
    with pytest.raises(DeliveryFailed, match="invalid_blocks"):
        async with delivering("CHOME"):
            blocks = [{"type": "divider"}] * 51
            await slack.bot.bolt.client.chat_postMessage(channel="CHOME", text="t", blocks=blocks)
    refused = slack.fake.calls_to("chat.postMessage")[-1]
    assert refused.answer["response_metadata"]["messages"] == [
        "[ERROR] 51 blocks in a message (max 50)"
    ]


async def test_a_deleted_post_is_message_gone_for_threads_and_edits(slack: Workspace) -> None:
    channels = SlackChannels(slack.bot.client_for)
    daily = await channels.post(WORKSPACE, Message(title="Today's challenge"))
    del slack.fake.messages[tuple(daily.split("/"))]  # someone deleted the day's post
    with pytest.raises(MessageGone):
        await channels.post(WORKSPACE, CARD, thread=daily)
    with pytest.raises(MessageGone):
        await channels.edit(WORKSPACE, daily, CARD)
    out = SlackOutbox(slack.bot.bolt.client, user="U1", channel="CHOME")
    with pytest.raises(MessageGone):
        await out.post(CARD, thread=daily)
    assert answered(slack, "chat.postMessage")[1:] == ["thread_not_found"] * 2


async def test_busy_slack_is_transient_with_its_retry_after(slack: Workspace) -> None:
    fake, channels = slack.fake, SlackChannels(slack.bot.client_for)
    fake.rate_limited["chat.postMessage"] = 4  # more than the client's 3 retries
    with pytest.raises(DeliveryFailed) as caught:
        await channels.post(WORKSPACE, CARD)
    assert caught.value.transient and caught.value.retry_after == 0.0
    assert len(fake.refused) == 4  # slack-sdk waited and retried three times first

    fake.server_errors["chat.postMessage"] = 1
    with pytest.raises(DeliveryFailed, match="Slack is busy") as caught:
        await channels.post(WORKSPACE, CARD)
    assert caught.value.transient and caught.value.retry_after is None
    fake.server_errors["conversations.open"] = 1
    with pytest.raises(DeliveryFailed) as dm:
        await channels.dm(WORKSPACE, f"{TEAM}:U7", CARD)
    assert dm.value.transient and not isinstance(dm.value, DirectMessageClosed)
    assert await channels.post(WORKSPACE, CARD)  # and later it goes through


async def test_progress_edits_are_best_effort_and_a_final_edit_raises(slack: Workspace) -> None:
    out = SlackOutbox(slack.bot.bolt.client, user="U1", channel="C1")
    ref = await out.reply(Message(title="Grading", progress=0.1))  # a DM message
    channel, _, ts = ref.rpartition(":")
    del slack.fake.messages[channel, ts]
    await out.edit(ref, Message(title="Grading", progress=0.5))  # logged, not raised
    with pytest.raises(MessageGone):
        await out.edit(ref, Message(title="Graded", progress=1.0))


async def test_the_response_url_is_used_five_times_then_never_again(slack: Workspace) -> None:
    fake = slack.fake
    url = fake.response_url("budget")
    out = SlackOutbox(slack.bot.bolt.client, user="U1", channel="C1", response_url=url)
    for n in range(RESPONSE_URL_USES + 2):
        await out.reply(Message(title=f"reply {n}"))
    assert len(fake.calls_to("response_url")) == RESPONSE_URL_USES  # never a 6th
    assert len(fake.calls_to("chat.postEphemeral")) == 2  # then in the channel, privately

    # no channel to fall back to: the interaction is over, the caller goes on by DM
    alone = SlackOutbox(slack.bot.bolt.client, user="U1", response_url=fake.response_url("dm"))
    for n in range(RESPONSE_URL_USES):
        await alone.reply(Message(title=f"reply {n}"))
    with pytest.raises(InteractionExpired, match="used up"):
        await alone.reply(Message(title="one too many"))

    # 30 minutes after the interaction it is not even tried
    late = SlackOutbox(
        slack.bot.bolt.client,
        user="U1",
        response_url=fake.response_url("late"),
        received_at=time.monotonic() - 30 * 60,
    )
    with pytest.raises(InteractionExpired):
        await late.reply(Message(title="too late"))
    assert not [c for c in fake.calls_to("response_url") if c.args["key"] == "late"]


async def test_the_fake_refuses_spent_and_expired_response_urls(slack: Workspace) -> None:
    fake = slack.fake
    spent, expired = fake.response_url("spent"), fake.response_url("expired")
    fake.response_urls["expired"].issued -= 30 * 60 + 1
    async with aiohttp.ClientSession() as http:
        statuses = []
        for _ in range(RESPONSE_URL_USES + 1):
            async with http.post(spent, json={"text": "hi"}) as r:
                statuses.append((r.status, await r.text()))
        async with http.post(expired, json={"text": "hi"}) as r:
            late = (r.status, await r.text())
    assert statuses == [(200, "ok")] * RESPONSE_URL_USES + [(404, "used_url")]
    assert late == (404, "expired_url")


async def test_an_expired_trigger_leaves_the_learner_a_one_line_way(slack: Workspace) -> None:
    slack.fake.trigger_ttl_s = 0.0  # the form is opened after Slack's 3 seconds
    await slack.sender.command("submit rate-limiter", channel="C1")
    answer = await slack.fake.wait_for(lambda c: c.method == "response_url")
    assert answered(slack, "views.open") == ["expired_trigger_id"]
    assert "/cruscible submit rate-limiter https://" in answer.dump


async def test_admin_channel_checks_that_the_bot_can_post_there(slack: Workspace, app: App) -> None:
    fake, sender, team = slack.fake, slack.sender, "T0CHECK"
    fake.add_channel("GHIDDEN", private=True, member=False)
    fake.add_channel("GINVITED", private=True, member=True)
    fake.add_channel("CARCHIVE", "old-news", archived=True)
    fake.add_channel("CPUBLIC", member=False)

    async def set_channel(channel: str) -> str:
        before = len(fake.calls_to("response_url"))
        await sender.command(f"admin channel <#{channel}|x>", user="UADMIN", team=team)
        await fake.wait_for(lambda c: len(fake.calls_to("response_url")) > before)
        return fake.calls_to("response_url")[-1].dump

    for channel, reason in [
        ("CNOWHERE", "if it is a private channel, invite me first with `/invite @Cruscible`"),
        ("GHIDDEN", "`/invite @Cruscible`"),
        ("CARCHIVE", "#old-news is archived"),
    ]:
        answer = await set_channel(channel)
        assert "The channel is unchanged" in answer and reason in answer, answer
        assert (await app.coach.communities.get("slack", team)).channel_id is None

    assert "GINVITED" in await set_channel("GINVITED")  # private, and the bot is in it
    assert "CPUBLIC" in await set_channel("CPUBLIC")  # public: the bot joins it
    assert [c.channel for c in fake.calls_to("conversations.join")] == ["CPUBLIC"]
    assert fake.channels["CPUBLIC"].member
    assert (await app.coach.communities.get("slack", team)).channel_id == "CPUBLIC"

    # a contest's own channel is checked the same way
    await sender.command(
        "admin contest create rate-limiter 2099-01-05T09:00 2099-01-12T09:00 <#GHIDDEN|x>",
        user="UADMIN",
        team=team,
    )
    refused = await fake.wait_for(lambda c: "The contest is not created" in c.dump)
    assert "`/invite @Cruscible`" in refused.dump
    community = await app.coach.communities.get("slack", team)
    assert await app.coach.contests.of(community) == []
