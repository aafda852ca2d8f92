"""The bolt app over real HTTP: signatures, the slash command, the form, admin settings."""

from __future__ import annotations

import json
import time

import pytest

from bot.adapters.slack import modal
from bot.adapters.slack.daily import local_today, post_daily
from bot.adapters.slack.outbox import SlackOutbox, slack_actor
from bot.app import App
from bot.core.message import Message
from bot.core.outbox import Actor, DirectMessageClosed
from tests.slack.conftest import Workspace
from tests.slack.fakeslack import TEAM, Call

ADMIN_TEAM = "T0ADMIN"


async def test_a_bad_or_stale_signature_is_refused(slack: Workspace) -> None:
    body = "command=%2Fcruscible&text=help&user_id=U1&channel_id=C1&team_id=" + TEAM
    forged = await slack.sender.send(body, "application/x-www-form-urlencoded", signature="v0=00")
    stale = await slack.sender.send(
        body, "application/x-www-form-urlencoded", timestamp=int(time.time()) - 600
    )
    assert (forged.status, stale.status) == (401, 401)
    assert not slack.fake.calls


async def test_help_is_acknowledged_then_answered_privately(slack: Workspace) -> None:
    resp = await slack.sender.command("help")
    assert resp.status == 200
    answer = await slack.fake.wait_for(lambda c: c.method == "response_url")
    assert answer.args["response_type"] == "ephemeral"
    assert answer.args["replace_original"] is False
    assert "/cruscible submit" in answer.dump
    assert answer.args["blocks"][0]["type"] == "header"


async def test_unknown_commands_get_a_private_error(slack: Workspace) -> None:
    await slack.sender.command("dance")
    answer = await slack.fake.wait_for(lambda c: c.method == "response_url")
    assert "unknown command" in answer.dump
    assert not slack.fake.calls_to("chat.postMessage")


async def test_submit_without_url_opens_the_form_and_refuses_a_bad_url(slack: Workspace) -> None:
    await slack.sender.command("submit rate-limiter", channel="C1")
    opened = await slack.fake.wait_for(lambda c: c.method == "views.open")
    view = opened.args["view"]
    assert opened.args["trigger_id"].startswith("trigger-")
    assert view["callback_id"] == modal.CALLBACK_ID
    select = view["blocks"][0]["element"]
    assert select["initial_option"]["value"] == "rate-limiter"

    values = {
        modal.CHALLENGE: {modal.CHALLENGE: {"selected_option": select["initial_option"]}},
        modal.URL: {modal.URL: {"type": "plain_text_input", "value": "ftp://example.com/x"}},
    }
    resp = await slack.sender.submit_form(view, values, user="U1")
    assert resp.status == 200
    assert resp.json() == {
        "response_action": "errors",
        "errors": {
            modal.URL: "Enter a public https:// git URL, or the http(s):// URL of your service."
        },
    }
    before = len(slack.fake.calls)
    await slack.settle()
    assert len(slack.fake.calls) == before  # nothing graded


async def test_admins_set_the_channel_and_post_once_a_day(slack: Workspace, app: App) -> None:
    fake, sender = slack.fake, slack.sender  # a workspace of its own: its daily post is made
    fake.channels["CDAILY"].member = False  # public: the bot joins it when it is set
    await sender.command("admin channel <#CDAILY|daily>", user="U1", team=ADMIN_TEAM)
    refused = await fake.wait_for(lambda c: c.method == "response_url")
    assert "Only workspace admins" in refused.dump

    await sender.command("admin channel <#GSECRET|secret>", user="UADMIN", team=ADMIN_TEAM)
    await fake.wait_for(lambda c: c.method == "response_url" and "/invite @Cruscible" in c.dump)
    await sender.command("admin channel <#CDAILY|daily>", user="UADMIN", team=ADMIN_TEAM)
    await fake.wait_for(lambda c: c.method == "response_url" and "CDAILY" in c.dump)
    assert fake.calls_to("conversations.join")[-1].channel == "CDAILY"
    community = await app.coach.communities.get("slack", ADMIN_TEAM)
    assert community.channel_id == "CDAILY"

    await sender.command("admin timezone Mars/Olympus", user="UADMIN", team=ADMIN_TEAM)
    await fake.wait_for(lambda c: c.method == "response_url" and "Mars/Olympus" in c.dump)
    await sender.command("admin post", user="UADMIN", team=ADMIN_TEAM)
    await sender.command("admin post", user="UADMIN", team=ADMIN_TEAM)
    await fake.wait_for(lambda c: c.method == "response_url" and "posted" in c.dump)
    await slack.settle()
    (daily,) = fake.calls_to("chat.postMessage")
    assert daily.channel == "CDAILY"
    actions = [b for b in daily.args["blocks"] if b["type"] == "actions"]
    ids = [e["action_id"] for e in actions[0]["elements"]]
    assert ids[0].startswith("start:") and ids[1].startswith("tradeoffs:")


async def test_a_rate_limited_call_is_retried(slack: Workspace, app: App) -> None:
    slack.fake.rate_limited["chat.postMessage"] = 1
    community = await app.coach.communities.get("slack", "T0RATE")
    community = await app.coach.communities.configure(community.id, channel_id="CRATE")
    ts = await post_daily(
        slack.bot.bolt.client,
        community,
        app.coach.daily_post("rate-limiter"),
        communities=app.coach.communities,
    )
    assert len(slack.fake.refused) == 1
    assert slack.fake.calls_to("chat.postMessage")[0].channel == "CRATE"
    record = await app.coach.communities.daily_post(community.id, local_today(community))
    assert record is not None and record.message_ref == ts and record.challenge == "rate-limiter"


async def test_closed_dms_raise_direct_message_closed(slack: Workspace) -> None:
    slack.fake.dm_closed.add("U2")
    out = SlackOutbox(slack.bot.bolt.client, user="U2", channel="C1")
    with pytest.raises(DirectMessageClosed):
        await out.dm(Actor("slack", f"{TEAM}:U2", "u2"), Message(title="hello"))
    assert not slack.fake.calls_to("chat.postMessage")


async def test_with_dms_closed_the_bundle_is_an_ephemeral_reply(slack: Workspace, app: App) -> None:
    slack.fake.dm_closed.add("U4")
    await slack.sender.press("start:rate-limiter", user="U4", channel="C1", message_ts="1.1")
    bundle = await slack.fake.wait_for(
        lambda c: c.method == "response_url" and "DATABASE_URL" in c.dump, within=60
    )
    (env,) = await app.coach.environments(slack_actor(TEAM, "U4", ""))
    try:
        assert env.bundle["REDIS_URL"] in bundle.dump
        assert not slack.fake.calls_to("chat.postMessage")
    finally:
        await app.coach.destroy_environment(env.id)


async def test_the_home_tab_is_published(slack: Workspace) -> None:
    await slack.sender.event(
        {"type": "app_home_opened", "user": "U3", "tab": "home", "channel": "DU3"}
    )
    published: Call = await slack.fake.wait_for(lambda c: c.method == "views.publish")
    view = published.args["view"]
    assert published.args["user_id"] == "U3" and view["type"] == "home"
    text = json.dumps(view)
    assert "You have no live environment" in text and "Streak: 0 days" in text
