"""Slash commands through the gateway: deferred at once, answered privately, admins checked."""

from __future__ import annotations

from bot.adapters.discord.client import CruscibleClient
from bot.adapters.discord.daily import post_daily
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
    ROLE_ID,
    SECOND_CHANNEL_ID,
    SECOND_GUILD_ID,
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
    assert community.name == "Guild 1"


async def test_submit_without_a_url_opens_a_form(bot: CruscibleClient, fake: FakeDiscord) -> None:
    token = await fake.interact(fake.slash("submit", who=LINUS, challenge="rate-limiter"))
    callback = await fake.wait_for(lambda: fake.callback(token))
    assert callback.json["type"] == 9  # a modal
    form = callback.json["data"]
    (field,) = [c for row in form["components"] for c in row["components"] if c["type"] == 4]
    assert "git repository" in field["label"]  # code is submitted here too, not only a URL
    answered = fake.modal_submit(form["custom_id"], {field["custom_id"]: "ftp://nope"}, who=LINUS)
    embed = await answer(fake, await fake.interact(answered))
    assert "'ftp://nope' is not an http(s) URL" in embed["description"]


async def test_each_guild_has_its_own_settings_and_daily_post(
    bot: CruscibleClient, fake: FakeDiscord, app: App
) -> None:
    role_id = ROLE_ID + 1  # the second guild's role
    role = {
        "id": str(role_id),
        "name": "learners",
        "permissions": "0",
        "position": 1,
        "color": 0,
        "hoist": False,
        "managed": False,
        "mentionable": True,
    }
    channel = fake.channels[SECOND_CHANNEL_ID] | {"permissions": str(EVERYONE_PERMISSIONS)}
    admin = {"who": ADA, "permissions": ADMIN, "channel_id": SECOND_CHANNEL_ID}
    for command in (
        fake.slash("admin", "timezone", **admin, timezone="Asia/Tokyo"),
        fake.slash(
            "admin",
            "channel",
            **admin,
            resolved={"channels": {str(SECOND_CHANNEL_ID): channel}},
            channel=str(SECOND_CHANNEL_ID),
        ),
        fake.slash(
            "admin", "role", **admin, resolved={"roles": {str(role_id): role}}, role=str(role_id)
        ),
    ):
        await answer(fake, await fake.interact(command))
    second = await app.coach.communities.get("discord", str(SECOND_GUILD_ID))
    assert (second.timezone, second.channel_id, second.ping_role) == (
        "Asia/Tokyo",
        str(SECOND_CHANNEL_ID),
        str(role_id),
    )
    first = await app.coach.communities.get("discord", str(GUILD_ID))
    assert first.timezone != "Asia/Tokyo" and first.id != second.id

    post_id = await post_daily(bot, second, app.coach.daily_post("rate-limiter"))
    (sent,) = fake.calls_to("POST", f"/channels/{SECOND_CHANNEL_ID}/messages")
    assert sent.json["content"] == f"<@&{role_id}>"
    assert [int(r) for r in sent.json["allowed_mentions"]["roles"]] == [role_id]
    assert sent.json["allowed_mentions"]["parse"] == []
    assert fake.messages[int(post_id)]["channel_id"] == str(SECOND_CHANNEL_ID)


async def test_challenge_options_autocomplete(bot: CruscibleClient, fake: FakeDiscord) -> None:
    token = await fake.interact(
        fake.slash("env", "provision", who=LINUS, focused="challenge", challenge="rate")
    )
    callback = await fake.wait_for(lambda: fake.callback(token))
    assert callback.json["type"] == 8
    choices = callback.json["data"]["choices"]
    assert {"name": "rate-limiter — Design a rate limiter", "value": "rate-limiter"} in choices
