"""The loop on Discord, end to end, on real infrastructure and grading: daily post → Start →
bundle by DM → submit → score card and plot in a thread under the post, full report by DM; then
the same grade's publication replayed under each refusal Discord can make."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import delete, select, update

from bot.adapters.discord.channels import DiscordChannels
from bot.adapters.discord.client import CruscibleClient
from bot.adapters.discord.daily import post_daily
from bot.adapters.discord.turn import local_day
from bot.app import App
from bot.core.outbox import Actor
from bot.core.publish import ChannelRoutes, graded_from
from bot.store import Community, Publication, Submission
from challenges.launch import running
from tests.discord.fake import CHANNEL_ID, GRACE, GUILD_ID, LINUS, Call, FakeDiscord

pytestmark = pytest.mark.slow


def dms(fake: FakeDiscord, title: str) -> list[Call]:
    return [
        c
        for c in fake.calls
        if c.method == "POST" and fake.is_dm(c) and c.status == 200
        if any(e.get("title", "").startswith(title) for e in c.embeds())
    ]


async def test_daily_post_start_submit_results(
    bot: CruscibleClient, fake: FakeDiscord, app: App
) -> None:
    coach = app.coach
    refused_before, expired_before = len(fake.refused), len(fake.expired_calls)
    community = await coach.communities.get("discord", str(GUILD_ID))
    community = await coach.communities.configure(community.id, channel_id=str(CHANNEL_ID))
    post_id = await post_daily(bot, community, coach.daily_post("rate-limiter"))
    assert await post_daily(bot, community, coach.daily_post("rate-limiter")) == post_id
    assert len(fake.calls_to("POST", f"/channels/{CHANNEL_ID}/messages")) == 1
    record = await coach.communities.daily_post(community.id, local_day(community))
    assert record is not None and (record.message_ref, record.challenge) == (
        post_id,
        "rate-limiter",
    )
    daily = fake.messages[int(post_id)]
    buttons = [b["custom_id"] for row in daily["components"] for b in row["components"]]
    assert buttons == ["start:rate-limiter", "tradeoffs:rate-limiter"]

    # *Start*, pressed on the daily post: provisioning, then the bundle by DM
    learner = Actor("discord", GRACE["id"], "grace")
    start = await fake.interact(fake.press("start:rate-limiter", daily, who=GRACE))
    (bundle,) = await fake.wait_for(lambda: dms(fake, "Your environment"), within=60)
    (env,) = await coach.environments(learner)
    try:
        assert env.bundle["DATABASE_URL"] in bundle.text()
        assert env.bundle["REDIS_URL"] in bundle.text()
        answered = await fake.wait_for(
            lambda: [c for c in fake.webhook_calls(start) if "is ready" in c.text()]
        )
        assert "private messages" in answered[0].embeds()[0]["description"]

        # a reference design runs against the bundle; its URL is submitted
        solution = coach.challenge("rate-limiter").solution("redis_lua")
        async with running(solution.module, env.bundle) as service:
            began = time.monotonic()
            submit = await fake.interact(fake.slash("submit", who=GRACE, url=service.url))
            (full,) = await fake.wait_for(lambda: dms(fake, "Your full grade report"), within=120)
            took = time.monotonic() - began

        # results in a thread under the day's post: the score card with its plot, the discussion
        assert fake.calls_to("POST", f"/channels/{CHANNEL_ID}/messages/{post_id}/threads")
        card, discussion = fake.calls_to("POST", f"/channels/{post_id}/messages")
        assert "scored" in card.embeds()[0]["title"] and "grace" in card.embeds()[0]["title"]
        (plot,) = [name for name in card.files if name.endswith(".png")]
        assert card.files[plot].startswith(b"\x89PNG")
        assert card.embeds()[-1]["image"]["url"] == f"attachment://{plot}"
        assert discussion.embeds()[0]["title"].startswith("Trade-offs")
        assert "report.json" in full.files
        assert all(c.json["allowed_mentions"] == {"parse": []} for c in (card, discussion, full))

        # progress: the deferred answer is edited with a bar, at most about once a second
        edits = [c for c in fake.webhook_calls(submit) if c.method == "PATCH"]
        bars = [c for c in edits if "█" in c.embeds()[0].get("description", "")]
        assert len(bars) >= 2
        assert len(edits) <= took + 3
        assert edits[-1].embeds()[0]["description"].startswith("graded")

        # *Show trade-offs* answers privately with the learner's own discussion
        tradeoffs = await fake.interact(fake.press("tradeoffs:rate-limiter", daily, who=GRACE))
        answer = await fake.wait_for(lambda: fake.webhook_calls(tradeoffs))
        assert answer[0].embeds()[0]["title"] == "Trade-offs in your rate-limiter design"

        # no bundle secret anywhere but the DMs
        for call in fake.calls:
            if not fake.is_dm(call):
                for secret in env.secrets():
                    assert secret not in call.text(), f"{call.method} {call.path} leaks a secret"
        assert not fake.unknown
        # nothing Discord would refuse
        assert fake.refused[refused_before:] == []
        assert fake.expired_calls[expired_before:] == []

        await replay_under_refusals(bot, fake, app, community, thread_id=int(post_id))
    finally:
        await coach.destroy_environment(env.id)


async def replay_under_refusals(
    bot: CruscibleClient, fake: FakeDiscord, app: App, community: Community, thread_id: int
) -> None:
    """The same real grade, published again (as a resumed grade or a retry would: through the
    channels) under each refusal: the grade stays done and counted, the outcome arrives."""
    coach = app.coach
    async with coach.store.session() as s:
        sub = await s.scalar(
            select(Submission).where(Submission.status == "done").order_by(Submission.id.desc())
        )
    assert sub is not None and sub.score is not None
    routes = ChannelRoutes(DiscordChannels(bot, bot.turns.threads), community, GRACE["id"])

    async def replay() -> Publication:
        async with coach.store.session() as s:
            await s.execute(delete(Publication).where(Publication.submission_id == sub.id))
        return await coach.publisher.publish(sub.id, graded_from(sub), routes, learner="grace")

    def private_reports(since: int) -> list[Call]:
        return [c for c in dms(fake, "Your full grade report") if fake.calls.index(c) >= since]

    try:
        # the thread under the day's post is archived: the score card goes in the channel
        fake.archive(thread_id)
        since = len(fake.calls)
        pub = await replay()
        assert pub.status == "published" and pub.card_ref.startswith(f"{CHANNEL_ID}/")
        assert pub.discussion_ref.split("/")[0] == pub.card_ref.split("/")[1]  # under the card
        fake.archive(thread_id, archived=False)

        # the bot may no longer post in the channel: the DM says so and why
        await fake.deny(CHANNEL_ID, "SEND_MESSAGES", "SEND_MESSAGES_IN_THREADS")
        since = len(fake.calls)
        pub = await replay()
        assert (pub.status, pub.card_ref) == ("published", "skipped")
        (report,) = private_reports(since)
        reason = report.embeds()[-1]["fields"][-1]["value"]
        assert reason == (
            "the bot lacks Send Messages in Threads in the results thread under that post; "
            "the bot lacks Send Messages in #channel-0 — it is only here"
        )
        async with coach.store.session() as s:
            assert (await s.get_one(Submission, sub.id)).status == "done"
        board = await coach.leaderboard("rate-limiter", community=community)
        assert "grace" in board.body and str(sub.score) in board.body

        # DMs closed as well, and no interaction: the outcome waits in /results
        fake.closed_dms.add(GRACE["id"])
        pub = await replay()
        assert (pub.status, pub.report_ref) == ("published", "noted")
        token = await fake.interact(fake.slash("results", who=GRACE))
        (answer,) = await fake.wait_for(lambda: fake.webhook_calls(token))
        assert "report not delivered" in answer.embeds()[0]["description"]
        fake.closed_dms.clear()
        await fake.allow(CHANNEL_ID)

        # a 429 storm on the thread: pending, then published by the retry
        fake.rate_limit(r"POST /channels/\d+/messages", times=5)
        pub = await replay()
        assert (pub.status, pub.card_ref) == ("pending", None)
        async with coach.store.session() as s:
            await s.execute(
                update(Publication)
                .where(Publication.id == pub.id)
                .values(next_attempt_at=coach.clock())
            )
        coach.channels.register("discord", routes.channels)
        try:
            assert await coach.publisher.retry_due() == 1
        finally:
            coach.channels.unregister("discord")
        async with coach.store.session() as s:
            pub = await s.get_one(Publication, pub.id)
        assert pub.status == "published" and pub.card_ref.startswith(f"{thread_id}/")
        assert not fake.expired_calls
    finally:
        fake.limits.clear()
        fake.closed_dms.clear()
        fake.archive(thread_id, archived=False)
        await fake.allow(CHANNEL_ID)


async def test_closed_dms_fall_back_to_a_private_reply(
    bot: CruscibleClient, fake: FakeDiscord, app: App
) -> None:
    """On a post made before the bot restarted: its buttons still work (dynamic items)."""
    daily = fake.posted("start:rate-limiter", "tradeoffs:rate-limiter")
    fake.dms_closed = True
    posts = len(fake.calls_to("POST", r"/channels/\d+/messages"))
    since = len(fake.calls)
    try:
        token = await fake.interact(fake.press("start:rate-limiter", daily, who=LINUS))
        refused = await fake.wait_for(
            lambda: [c for c in fake.calls[since:] if fake.is_dm(c) and c.status == 403],
            within=60,
        )
        (env,) = await app.coach.environments(Actor("discord", LINUS["id"], "linus"))
        try:
            answer = await fake.wait_for(
                lambda: [
                    c for c in fake.webhook_calls(token) if env.bundle["REDIS_URL"] in c.text()
                ]
            )
            assert answer[0].method == "PATCH"  # the private ("ephemeral") answer, edited
            assert len(refused) == 1
            assert len(fake.calls_to("POST", r"/channels/\d+/messages")) == posts + 1  # the DM
        finally:
            await app.coach.destroy_environment(env.id)
    finally:
        fake.dms_closed = False
