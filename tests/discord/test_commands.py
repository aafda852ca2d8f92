"""Slash commands through the gateway: deferred at once, answered privately, admins checked."""

from __future__ import annotations

from bot.adapters.discord.client import CruscibleClient
from bot.app import App
from tests.discord.fake import (
    ADA,
    CHANNEL_ID,
    EPHEMERAL,
    EVERYONE_PERMISSIONS,
    GUILD_ID,
    LINUS,
    MANAGE_GUILD,
    OTHER_CHANNEL_ID,
    FakeDiscord,
)

ADMIN = EVERYONE_PERMISSIONS | MANAGE_GUILD


async def answer(fake: FakeDiscord, token: str) -> dict:
    """The embed of the (deferred) interaction's first answer."""
    calls = await fake.wait_for(lambda: fake.webhook_calls(token))
    return calls[0].embeds()[0]


async def test_commands_are_deferred_ephemerally_then_answered(
    bot: CruscibleClient, fake: FakeDiscord
) -> None:
    token = await fake.interact(fake.slash("challenge", "list", who=LINUS))
    embed = await answer(fake, token)
    assert fake.callback(token).json == {"type": 5, "data": {"flags": EPHEMERAL}}
    assert embed["title"] == "Challenges" and "rate-limiter" in embed["description"]
    (edit,) = fake.webhook_calls(token)
    assert edit.method == "PATCH" and edit.path.endswith("/messages/@original")
    assert edit.json["allowed_mentions"] == {"parse": []}


async def test_an_admin_command_is_refused_to_a_member(
    bot: CruscibleClient, fake: FakeDiscord, app: App
) -> None:
    token = await fake.interact(fake.slash("admin", "timezone", who=LINUS, timezone="Asia/Tokyo"))
    callback = await fake.wait_for(lambda: fake.callback(token))
    assert callback.json["type"] == 4
    assert callback.json["data"]["flags"] == EPHEMERAL
    assert "Manage Server" in callback.embeds()[0]["description"]
    community = await app.coach.communities.get("discord", str(GUILD_ID))
    assert community.timezone != "Asia/Tokyo"


async def test_a_bad_timezone_gets_a_clear_private_error(
    bot: CruscibleClient, fake: FakeDiscord
) -> None:
    command = fake.slash("admin", "timezone", who=ADA, permissions=ADMIN, timezone="Mars/Olympus")
    embed = await answer(fake, await fake.interact(command))
    assert embed["title"] == "That did not work"
    assert embed["description"] == "'Mars/Olympus' is not a timezone like Europe/Paris or UTC"


async def test_an_admin_configures_the_guild(
    bot: CruscibleClient, fake: FakeDiscord, app: App
) -> None:
    channel = fake.channels[OTHER_CHANNEL_ID] | {"permissions": str(EVERYONE_PERMISSIONS)}
    resolved = {"channels": {str(OTHER_CHANNEL_ID): channel}}
    command = fake.slash(
        "admin",
        "channel",
        who=ADA,
        permissions=ADMIN,
        resolved=resolved,
        channel=str(OTHER_CHANNEL_ID),
    )
    embed = await answer(fake, await fake.interact(command))
    assert {"name": "Channel", "value": str(OTHER_CHANNEL_ID), "inline": True} in embed["fields"]
    command = fake.slash("admin", "post-time", who=ADA, permissions=ADMIN, time="07:30")
    await answer(fake, await fake.interact(command))
    command = fake.slash(
        "admin",
        "channel",
        who=ADA,
        permissions=ADMIN,
        resolved=resolved
        | {"channels": {str(CHANNEL_ID): fake.channels[CHANNEL_ID] | {"permissions": "0"}}},
        channel=str(CHANNEL_ID),
    )
    await answer(fake, await fake.interact(command))
    community = await app.coach.communities.get("discord", str(GUILD_ID))
    assert (community.channel_id, community.post_time) == (str(CHANNEL_ID), "07:30")
    assert community.name == "Test Guild"


async def test_submit_without_a_url_opens_a_form(bot: CruscibleClient, fake: FakeDiscord) -> None:
    token = await fake.interact(fake.slash("submit", who=LINUS, challenge="rate-limiter"))
    callback = await fake.wait_for(lambda: fake.callback(token))
    assert callback.json["type"] == 9  # a modal
    form = callback.json["data"]
    (field,) = [c for row in form["components"] for c in row["components"] if c["type"] == 4]
    answered = fake.modal_submit(form["custom_id"], {field["custom_id"]: "ftp://nope"}, who=LINUS)
    embed = await answer(fake, await fake.interact(answered))
    assert "'ftp://nope' is not an http(s) URL" in embed["description"]
