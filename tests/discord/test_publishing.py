"""Publishing on Discord when Discord refuses: the real discord.py client against the local
Discord, which refuses as Discord does (see tests/discord/fake.py). Grading is not the point
here (a real grade's publication is replayed in test_e2e.py): a scripted grader stands in."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

import aiohttp
import discord
import pytest
from sqlalchemy import select, update

from bot.adapters.discord.channels import DiscordChannels
from bot.adapters.discord.client import CruscibleClient
from bot.adapters.discord.outbox import TOKEN_MARGIN, TOKEN_VALID
from bot.app import App
from bot.core.channels import MessageGone
from bot.core.message import Field, Message
from bot.core.outbox import DeliveryFailed, DirectMessageClosed
from bot.store import Community, Publication, Submission, User
from tests.community.support import ScriptedGrader
from tests.discord.fake import (
    ADA,
    API,
    EPHEMERAL,
    EVERYONE_PERMISSIONS,
    GRACE,
    GUILD_ID,
    LINUS,
    MANAGE_GUILD,
    OTHER_CHANNEL_ID,
    Call,
    FakeDiscord,
)

URL = "http://127.0.0.1:9/service"
CHALLENGE = "url-shortener"  # not the day's post: results go to the channel, not a thread


@pytest.fixture
async def discord_channels(bot: CruscibleClient, app: App) -> AsyncIterator[DiscordChannels]:
    """The Discord ``Channels`` registered with the coach, as ``cruscible run`` does."""
    channels = DiscordChannels(bot, bot.turns.threads)
    app.coach.channels.register("discord", channels)
    yield channels
    app.coach.channels.unregister("discord")


@pytest.fixture
async def refusals(fake: FakeDiscord) -> AsyncIterator[FakeDiscord]:
    """The fake, put back to granting everything after the test."""
    yield fake
    fake.dms_closed = False
    fake.closed_dms.clear()
    fake.limits.clear()
    for channel_id in list(fake.denied):
        await fake.allow(channel_id)


@pytest.fixture
def quick(app: App) -> Iterator[ScriptedGrader]:
    """A scripted grader in place of the real one (restored after)."""
    real, app.coach.grader = app.coach.grader, ScriptedGrader(scores={URL: 64})
    yield app.coach.grader  # type: ignore[misc]
    app.coach.grader = real


@pytest.fixture
async def home(app: App) -> AsyncIterator[Community]:
    """Guild 1 posts its results in its other channel during the test."""
    coach = app.coach
    community = await coach.communities.get("discord", str(GUILD_ID))
    before = community.channel_id
    yield await coach.communities.configure(community.id, channel_id=str(OTHER_CHANNEL_ID))
    await coach.communities.configure(community.id, channel_id=before or "")


def embeds_text(call: Call) -> str:
    return "\n".join(
        " ".join(
            [e.get("title", ""), e.get("description", "")]
            + [f"{f['name']}: {f['value']}" for f in e.get("fields", [])]
        )
        for e in call.embeds()
    )


def dms_to(fake: FakeDiscord, who: dict, since: int = 0) -> list[Call]:
    """DM posts and edits that reached ``who`` (recorded after call number ``since``)."""
    mine = {
        int(c["id"])
        for c in fake.channels.values()
        if c.get("type") == 1 and c["recipients"][0]["id"] == who["id"]
    }
    return [
        c
        for c in fake.calls[since:]
        if c.status == 200 and fake.is_dm(c) and int(c.path.split("/")[2]) in mine
    ]


async def latest(app: App, who: dict) -> tuple[Submission | None, Publication | None]:
    """The learner's latest submission (None before the first) and its publication."""
    async with app.coach.store.session() as s:
        sub = await s.scalar(
            select(Submission)
            .join(User, User.id == Submission.user_id)
            .where(User.platform == "discord", User.platform_id == who["id"])
            .order_by(Submission.id.desc())
            .limit(1)
        )
        if sub is None:
            return None, None
        pub = await s.scalar(select(Publication).where(Publication.submission_id == sub.id))
        return sub, pub


async def last_id(app: App, who: dict) -> int:
    sub, _ = await latest(app, who)
    return sub.id if sub else 0


async def graded(app: App, who: dict, after: int) -> Submission:
    """Wait until the learner's submission made after submission ``after`` left the queue
    and was published."""
    async with asyncio.timeout(30):
        while True:
            sub, pub = await latest(app, who)
            if (
                sub is not None
                and sub.id > after
                and sub.status not in ("queued", "running")
                and (pub is None or pub.attempts)
            ):
                await app.coach.queue.idle()
                return sub
            await asyncio.sleep(0.05)


# -- set-up that cannot silently break -----------------------------------------------------------
async def test_admin_channel_names_the_permission_the_bot_lacks(
    bot: CruscibleClient, refusals: FakeDiscord, app: App
) -> None:
    fake = refusals
    await fake.deny(OTHER_CHANNEL_ID, "ATTACH_FILES", "CREATE_PUBLIC_THREADS")
    community = await app.coach.communities.get("discord", str(GUILD_ID))
    before = community.channel_id
    channel = fake.channels[OTHER_CHANNEL_ID] | {"permissions": str(EVERYONE_PERMISSIONS)}
    command = fake.slash(
        "admin",
        "channel",
        who=ADA,
        permissions=EVERYONE_PERMISSIONS | MANAGE_GUILD,
        resolved={"channels": {str(OTHER_CHANNEL_ID): channel}},
        channel=str(OTHER_CHANNEL_ID),
    )
    token = await fake.interact(command)
    (answer,) = await fake.wait_for(lambda: fake.webhook_calls(token))
    text = answer.embeds()[0]["description"]
    assert "the bot lacks Attach Files, Create Public Threads in #channel-1" in text
    assert (await app.coach.communities.get("discord", str(GUILD_ID))).channel_id == before


# -- each refusal, named ---------------------------------------------------------------------------
async def test_refusals_become_delivery_failures_an_admin_can_act_on(
    bot: CruscibleClient, refusals: FakeDiscord, home: Community
) -> None:
    fake = refusals
    channels = DiscordChannels(bot, bot.turns.threads)
    root = await channels.post(home, Message(title="root"))
    assert await channels.post(home, Message(title="in the thread"), thread=root)

    await fake.deny(OTHER_CHANNEL_ID, "SEND_MESSAGES")
    with pytest.raises(DeliveryFailed, match="lacks Send Messages in #channel-1") as denied:
        await channels.post(home, Message(title="refused"))
    assert not denied.value.transient
    await fake.allow(OTHER_CHANNEL_ID)

    thread_id = int(root.split("/")[1])
    fake.archive(thread_id)
    with pytest.raises(DeliveryFailed, match="^the results thread under that post is archived$"):
        await channels.post(home, Message(title="x"), thread=root)
    fake.archive(thread_id, locked=True)
    with pytest.raises(DeliveryFailed, match="is locked"):
        await channels.post(home, Message(title="x"), thread=root)
    await fake.delete_channel(thread_id)
    with pytest.raises(MessageGone, match="no longer exists"):
        await channels.post(home, Message(title="x"), thread=root)
    assert await channels.post(home, Message(title="again"), thread=root)  # in a new thread

    other = await channels.post(home, Message(title="deleted soon"))
    fake.delete_message(int(other.split("/")[1]))
    with pytest.raises(MessageGone, match="was deleted"):
        await channels.post(home, Message(title="x"), thread=other)  # no thread under it yet
    with pytest.raises(MessageGone):
        await channels.edit(home, other, Message(title="x"))

    storms = len(fake.rate_limited)
    fake.rate_limit(rf"POST /channels/{OTHER_CHANNEL_ID}/messages", times=5)
    with pytest.raises(DeliveryFailed, match="429") as limited:
        await channels.post(home, Message(title="storm"))
    assert limited.value.transient and limited.value.retry_after == 1.0
    assert len(fake.rate_limited) == storms + 5  # the client's own retries, then the failure

    fake.closed_dms.add(LINUS["id"])
    with pytest.raises(DirectMessageClosed):
        await channels.dm(home, LINUS["id"], Message(title="private"))
    assert await channels.dm(home, GRACE["id"], Message(title="private"))


async def test_messages_stay_within_discords_limits(
    bot: CruscibleClient, fake: FakeDiscord, home: Community
) -> None:
    """The fake refuses what is over Discord's limits (50035); what the bot renders is not."""
    channel = bot.get_partial_messageable(OTHER_CHANNEL_ID, guild_id=GUILD_ID)
    too_many = discord.Embed(title="t")
    for i in range(26):
        too_many.add_field(name=str(i), value="v")
    with pytest.raises(discord.HTTPException) as refused:
        await channel.send(embed=too_many)
    assert (refused.value.status, refused.value.code) == (400, 50035)
    with pytest.raises(discord.HTTPException, match="50035"):
        await channel.send(content="x" * 2001)

    huge = Message(
        title="t" * 300,
        body="b" * 9000,
        fields=[Field(f"name {i}" * 40, "v" * 2000) for i in range(30)],
        footer="f" * 3000,
    )
    channels = DiscordChannels(bot, bot.turns.threads)
    assert await channels.post(home, huge)


async def test_a_deleted_channel_is_said_to_be_gone(
    bot: CruscibleClient, fake: FakeDiscord, app: App
) -> None:
    extra = await fake.add_channel(name="results")
    gone = Community(id=0, platform="discord", platform_id=str(GUILD_ID), channel_id=str(extra))
    channels = DiscordChannels(bot, bot.turns.threads)
    assert await channels.post(gone, Message(title="x"))
    await fake.delete_channel(extra)
    with pytest.raises(MessageGone, match=r"no longer exists$"):
        await channels.post(gone, Message(title="x"))


async def test_the_local_discord_refuses_as_discord_does(
    bot: CruscibleClient, fake: FakeDiscord
) -> None:
    """Rules met by no path of the bot: a second initial response, the 429 format, component
    and attachment limits (raw requests, as a misbehaving client would send them)."""
    token = await fake.interact(fake.slash("challenge", "list", who=GRACE))
    await fake.wait_for(lambda: fake.webhook_calls(token))
    iid = token.removeprefix("itoken-")
    auth = {"Authorization": "Bot fake-bot-token"}
    async with aiohttp.ClientSession(fake.url, headers=auth) as http:
        again = {"type": 5, "data": {"flags": EPHEMERAL}}
        async with http.post(f"{API}/interactions/{iid}/{token}/callback", json=again) as r:
            assert (r.status, (await r.json())["code"]) == (400, 40060)

        fake.rate_limit(rf"POST /channels/{OTHER_CHANNEL_ID}/messages", times=1, retry_after=2.5)
        path = f"{API}/channels/{OTHER_CHANNEL_ID}/messages"
        async with http.post(path, json={"content": "x"}) as r:
            assert r.status == 429
            assert (await r.json())["retry_after"] == 2.5
            assert r.headers["Retry-After"] == "2" or r.headers["Retry-After"] == "3"
            assert r.headers["X-RateLimit-Remaining"] == "0"
            assert float(r.headers["X-RateLimit-Reset-After"]) == 2.5

        rows = [{"type": 1, "components": [_button(f"b{j}") for j in range(6)]}]
        rows += [{"type": 1, "components": [_button(f"r{i}")]} for i in range(5)]
        rows[1]["components"][0]["label"] = "l" * 81
        async with http.post(path, json={"content": "x", "components": rows}) as r:
            body = await r.json()
            assert (r.status, body["code"]) == (400, 50035)
            assert {
                "components",
                "components.0.components",
                "components.1.components.0.label",
            } <= set(body["errors"])
        form = aiohttp.FormData()
        form.add_field("payload_json", '{"content": "files"}', content_type="application/json")
        for i in range(11):
            form.add_field(f"files[{i}]", b"x", filename=f"f{i}.txt")
        async with http.post(path, data=form) as r:
            assert (r.status, (await r.json())["code"]) == (400, 50035)


def _button(custom_id: str) -> dict:
    return {"type": 2, "style": 1, "label": custom_id, "custom_id": custom_id}


# -- the outcome arrives whatever is refused -------------------------------------------------------
async def test_a_refused_channel_and_closed_dms_end_in_a_private_follow_up(
    bot: CruscibleClient, refusals: FakeDiscord, app: App, quick: ScriptedGrader, home: Community
) -> None:
    fake = refusals
    await fake.deny(OTHER_CHANNEL_ID, "SEND_MESSAGES")
    fake.closed_dms.add(LINUS["id"])
    before = await last_id(app, LINUS)
    token = await fake.interact(fake.slash("submit", who=LINUS, url=URL, challenge=CHALLENGE))
    sub = await graded(app, LINUS, before)
    assert (sub.status, sub.score) == ("done", 64)
    board = await app.coach.leaderboard(CHALLENGE, community=home)
    assert "linus" in board.body and "64" in board.body

    follow_ups = [
        c
        for c in fake.webhook_calls(token)
        if c.method == "POST" and c.status == 200 and c.json["flags"] & EPHEMERAL
    ]
    (report,) = [c for c in follow_ups if "Your full grade report" in embeds_text(c)]
    assert "Not posted in the channel: the bot lacks Send Messages in #channel-1" in embeds_text(
        report
    )
    _, pub = await latest(app, LINUS)
    assert pub is not None and (pub.status, pub.card_ref) == ("published", "skipped")


async def test_an_expired_token_is_never_used_and_the_learner_still_hears(
    bot: CruscibleClient, refusals: FakeDiscord, app: App, quick: ScriptedGrader, home: Community
) -> None:
    """A /submit whose token is within a minute of its 15 (it waited in the queue): the outbox
    no longer uses it; the queue position, "graded" and the report arrive by DM."""
    fake = refusals
    gate = quick.gate(URL)
    since = len(fake.calls)
    old = TOKEN_VALID - TOKEN_MARGIN + timedelta(seconds=5)  # the fake still takes the defer
    before = await last_id(app, GRACE)
    token = await fake.interact(
        fake.slash("submit", who=GRACE, url=URL, challenge=CHALLENGE, age=old)
    )
    await fake.wait_for(lambda: quick.started and dms_to(fake, GRACE, since))
    gate.set()
    await graded(app, GRACE, before)

    assert fake.expired_calls == []
    assert fake.webhook_calls(token) == []  # deferred, then never used again
    texts = [embeds_text(c) for c in dms_to(fake, GRACE, since)]
    assert texts[0].startswith(f"Grading {CHALLENGE}…")  # the queue position, by DM
    assert any("graded" in t for t in texts)  # the progress message, edited in the DM
    assert any(t.startswith("Your full grade report") for t in texts)


async def test_a_refused_token_is_dropped_for_good(
    bot: CruscibleClient, refusals: FakeDiscord, app: App, quick: ScriptedGrader, home: Community
) -> None:
    """Discord answers 401/50027 once: the outbox never uses that token again (the invalid
    request limit), progress continues by DM; with DMs closed too, the note waits in results."""
    fake = refusals
    gate = quick.gate(URL)
    before = await last_id(app, ADA)
    token = await fake.interact(fake.slash("submit", who=ADA, url=URL, challenge=CHALLENGE))
    await fake.wait_for(lambda: quick.started and fake.webhook_calls(token))
    await fake.deny(OTHER_CHANNEL_ID, "SEND_MESSAGES")
    fake.closed_dms.add(ADA["id"])
    fake.expire_interactions()
    gate.set()
    sub = await graded(app, ADA, before)
    assert sub.status == "done"
    assert len(fake.expired_calls) == 1  # the one call that found out, and no other
    _, pub = await latest(app, ADA)
    assert pub is not None and (pub.status, pub.report_ref) == ("published", "noted")

    await fake.allow(OTHER_CHANNEL_ID)
    token = await fake.interact(fake.slash("results", who=ADA))
    (answer,) = await fake.wait_for(
        lambda: [c for c in fake.webhook_calls(token) if c.method == "PATCH"]
    )
    line = answer.embeds()[0]["description"].splitlines()[0]
    assert line.startswith(f"#{sub.id} {CHALLENGE}: 64/100")
    assert "not posted in the channel: the bot lacks Send Messages in #channel-1" in line
    assert "report not delivered" in line


async def test_a_rate_limited_channel_is_published_by_the_retry(
    bot: CruscibleClient,
    refusals: FakeDiscord,
    app: App,
    quick: ScriptedGrader,
    home: Community,
    discord_channels: DiscordChannels,
) -> None:
    fake = refusals
    fake.rate_limit(rf"POST /channels/{OTHER_CHANNEL_ID}/messages", times=5)
    before, since = await last_id(app, LINUS), len(fake.calls)
    await fake.interact(fake.slash("submit", who=LINUS, url=URL, challenge=CHALLENGE))
    sub = await graded(app, LINUS, before)
    assert sub.status == "done"
    (report,) = [c for c in dms_to(fake, LINUS, since) if "full grade report" in embeds_text(c)]
    assert "it will be posted when the platform accepts it" in embeds_text(report)
    _, pub = await latest(app, LINUS)
    assert pub is not None and (pub.status, pub.card_ref) == ("pending", None), pub.channel_error
    assert "429" in (pub.last_error or "")

    async with app.coach.store.session() as s:  # its time has come (the job runs every 30 s)
        await s.execute(
            update(Publication)
            .where(Publication.id == pub.id)
            .values(next_attempt_at=app.coach.clock() - timedelta(seconds=1))
        )
    posts = len(fake.calls_to("POST", rf"/channels/{OTHER_CHANNEL_ID}/messages"))
    assert await app.coach.publisher.retry_due() >= 1
    _, pub = await latest(app, LINUS)
    assert pub is not None and pub.status == "published" and pub.card_ref
    card = fake.calls_to("POST", rf"/channels/{OTHER_CHANNEL_ID}/messages")[posts]
    assert card.status == 200 and "linus scored 64/100" in card.embeds()[0]["title"]
