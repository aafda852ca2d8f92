"""The Discord ``Channels`` (posting without an interaction) and the contest commands."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from bot.adapters.discord.channels import DiscordChannels
from bot.adapters.discord.client import CruscibleClient
from bot.app import App
from bot.core.channels import MessageGone
from bot.core.message import Message
from bot.core.outbox import DirectMessageClosed
from bot.store import Community
from tests.discord.fake import (
    ADA,
    CHANNEL_ID,
    EVERYONE_PERMISSIONS,
    GRACE,
    GUILD_ID,
    LINUS,
    MANAGE_GUILD,
    OTHER_CHANNEL_ID,
    ROLE_ID,
    FakeDiscord,
)

# Posts go to the guild's other channel: the e2e test counts the daily post in CHANNEL_ID.
GUILD = Community(
    id=0, platform="discord", platform_id=str(GUILD_ID), channel_id=str(OTHER_CHANNEL_ID)
)


@pytest.fixture
def quiet_log(fake: FakeDiscord) -> Iterator[None]:
    """Leave the fake's call log as found: other tests count the posts and DMs in it."""
    before = len(fake.calls)
    yield
    del fake.calls[before:]


@pytest.mark.usefixtures("quiet_log")
async def test_post_edit_thread_and_dm_without_an_interaction(
    bot: CruscibleClient, fake: FakeDiscord
) -> None:
    channels = DiscordChannels(bot, bot.turns.threads)
    pinged = Community(
        id=0,
        platform="discord",
        platform_id=str(GUILD_ID),
        channel_id=str(OTHER_CHANNEL_ID),
        ping_role=str(ROLE_ID),
    )
    ref = await channels.post(pinged, Message(title="Leaderboard", body="1. ada"), ping=True)
    channel_id, message_id = (int(x) for x in ref.split("/"))
    assert channel_id == OTHER_CHANNEL_ID
    sent = fake.calls_to("POST", f"/channels/{OTHER_CHANNEL_ID}/messages")[-1]
    assert sent.json["content"] == f"<@&{ROLE_ID}>"
    assert [int(r) for r in sent.json["allowed_mentions"]["roles"]] == [ROLE_ID]

    quiet = await channels.post(GUILD, Message(title="Board"))  # no ping asked: none
    assert not fake.calls_to("POST", f"/channels/{OTHER_CHANNEL_ID}/messages")[-1].json.get(
        "content"
    )

    await channels.edit(GUILD, ref, Message(title="Leaderboard", body="1. bob"))
    assert fake.messages[message_id]["embeds"][0]["description"] == "1. bob"
    with pytest.raises(MessageGone):
        await channels.edit(GUILD, f"{OTHER_CHANNEL_ID}/12345", Message(title="gone"))

    in_thread = await channels.post(GUILD, Message(title="ada scored 90/100"), thread=quiet)
    thread_id = int(in_thread.split("/")[0])
    assert thread_id == int(quiet.split("/")[1])  # the thread under the root message
    assert fake.channels[thread_id]["type"] == 11

    dm = await channels.dm(GUILD, GRACE["id"], Message(title="A private note"))
    assert int(dm.split("/")[0]) in fake.dm_channels
    fake.dms_closed = True
    try:
        with pytest.raises(DirectMessageClosed):
            await channels.dm(GUILD, LINUS["id"], Message(title="closed"))
    finally:
        fake.dms_closed = False


@pytest.mark.usefixtures("quiet_log")
async def test_admins_create_contests_and_learners_read_them(
    bot: CruscibleClient, fake: FakeDiscord, app: App
) -> None:
    start, end = "2030-01-07T09:00", "2030-01-14T09:00"
    options = [
        {"name": "challenge", "type": 3, "value": "rate-limiter"},
        {"name": "start", "type": 3, "value": start},
        {"name": "end", "type": 3, "value": end},
    ]
    command = fake.slash("admin", who=ADA, permissions=EVERYONE_PERMISSIONS | MANAGE_GUILD)
    command["data"]["options"] = [
        {
            "name": "contest",
            "type": 2,
            "options": [{"name": "create", "type": 1, "options": options}],
        }
    ]
    community = await app.coach.communities.get("discord", str(GUILD_ID))
    await app.coach.communities.configure(community.id, channel_id=str(CHANNEL_ID))
    token = await fake.interact(command)
    (answer,) = await fake.wait_for(lambda: fake.webhook_calls(token))
    title = answer.embeds()[0]["title"]
    assert title.startswith("Contest #") and title.endswith(": rate-limiter (upcoming)")
    contest = await app.coach.contests.current(community)
    assert contest is not None and contest.starts_at == datetime.fromisoformat(start).replace(
        tzinfo=ZoneInfo(community.timezone)
    )
    try:
        refused = fake.slash("admin", who=LINUS)
        refused["data"]["options"] = command["data"]["options"]
        other = await fake.interact(refused)
        callback = await fake.wait_for(lambda: fake.callback(other))
        assert "Manage Server" in callback.embeds()[0]["description"]

        shown = await fake.interact(fake.slash("contest", "show", who=LINUS))
        (reply,) = await fake.wait_for(lambda: fake.webhook_calls(shown))
        assert reply.embeds()[0]["title"] == f"Contest #{contest.id}: rate-limiter (upcoming)"
    finally:
        await app.coach.contests.cancel(community, contest.id)
