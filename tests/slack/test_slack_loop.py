"""The whole loop through Slack: daily post → Start → bundle by DM → /cruscible submit → thread;
then the same finished grade published again while Slack refuses route after route.

One real grade of a reference design on real provisioning; every call to Slack is recorded.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from sqlalchemy import delete, select

from bot.adapters.slack.channels import PLATFORM, SlackChannels
from bot.adapters.slack.daily import post_daily
from bot.adapters.slack.outbox import SlackOutbox, slack_actor
from bot.app import App
from bot.core.publish import NOTED, SKIPPED, OutboxRoutes, graded_from
from bot.store import Publication, Submission
from challenges.launch import running
from tests.slack.conftest import Workspace
from tests.slack.fakeslack import TEAM, Call

pytestmark = pytest.mark.slow
LEARNER, CHANNEL = "U1", "CDAILY"
DM = f"D{LEARNER}"
GRADE_S = 150.0


def posted(channel: str, words: str) -> Callable[[Call], bool]:
    """A message posted in ``channel`` that says ``words``."""
    return lambda c: c.method == "chat.postMessage" and c.channel == channel and words in c.dump


async def test_the_loop_threads_results_and_keeps_bundles_in_dms(
    slack: Workspace, app: App
) -> None:
    fake, sender, coach = slack.fake, slack.sender, app.coach
    community = await coach.communities.get("slack", TEAM)
    community = await coach.communities.configure(community.id, channel_id=CHANNEL)
    daily_ts = await post_daily(
        slack.bot.bolt.client,
        community,
        coach.daily_post("rate-limiter"),
        communities=coach.communities,
    )

    # Start → the bundle by DM, a private note in the channel
    pressed = await sender.press(
        "start:rate-limiter", user=LEARNER, channel=CHANNEL, message_ts=daily_ts
    )
    assert pressed.status == 200
    bundle_dm = await fake.wait_for(posted(DM, "DATABASE_URL"), within=60)
    (env,) = await coach.environments(slack_actor(TEAM, LEARNER, ""))
    assert env.bundle["DATABASE_URL"] in bundle_dm.dump
    assert env.bundle["REDIS_URL"] in bundle_dm.dump
    await fake.wait_for(lambda c: c.method == "response_url" and "private messages" in c.dump)

    # submit, with the URL escaped as Slack sends it
    solution = coach.challenge("rate-limiter").solution("redis_lua")
    async with running(solution.module, env.bundle) as service:
        acked = await sender.command(
            f"submit rate-limiter <{service.url}>", user=LEARNER, channel="C1"
        )
        card = await fake.wait_for(posted(CHANNEL, "scored"), within=GRADE_S)
        full = await fake.wait_for(posted(DM, "Your full grade report"), within=30)
        await slack.settle()
    assert acked.status == 200
    assert acked.received_at < card.at  # acknowledged before the grade ended

    # the score card and the discussion in the daily post's thread, the plot uploaded there
    discussion = next(c for c in fake.calls if posted(CHANNEL, "Trade-offs")(c))
    assert card.args["thread_ts"] == daily_ts and discussion.args["thread_ts"] == daily_ts
    plot_share = next(
        c
        for c in fake.calls_to("files.completeUploadExternal")
        if c.channel == CHANNEL and c.args["thread_ts"] == daily_ts
    )
    (plot,) = json.loads(plot_share.args["files"])
    assert plot["title"].endswith(".png") and fake.uploads[plot["id"]].startswith(b"\x89PNG")

    # progress: one DM message, updated in place, ending "graded"
    progress = next(c for c in fake.calls if posted(DM, "Grading rate-limiter")(c))
    updates = [c for c in fake.calls_to("chat.update") if c.channel == DM]
    assert updates and all(u.args["ts"] == progress.answer["ts"] for u in updates)
    assert "graded" in updates[-1].dump

    # the full report by DM with its files
    assert full.at > card.at
    dm_files = [
        f
        for c in fake.calls_to("files.completeUploadExternal")
        if c.is_dm
        for f in json.loads(c.args["files"])
    ]
    assert "report.json" in {f["title"] for f in dm_files}

    # no secret of the bundle anywhere but in DMs
    for call in fake.public_calls():
        for secret in env.secrets():
            assert secret not in call.dump, f"a bundle secret went out in {call.method}"

    # App Home lists the environment, the result and the streak
    await sender.event({"type": "app_home_opened", "user": LEARNER, "tab": "home", "channel": DM})
    home: Call = await fake.wait_for(lambda c: c.method == "views.publish")
    text = json.dumps(home.args["view"])
    assert env.id in text and "rate-limiter" in text and "Streak: 1 day " in text

    # the same finished grade, published again while Slack refuses
    async with coach.store.session() as s:
        sub = await s.scalar(select(Submission).where(Submission.url == service.url))
    assert sub is not None and sub.status == "done"
    try:
        await a_finished_grade_survives_every_refusal(slack, app, sub.id, daily_ts)
    finally:
        await coach.destroy_environment(env.id)


async def publish_again(app: App, sub_id: int, out: SlackOutbox) -> Publication:
    """The stored real grade published again from the start (its publication row dropped), as
    the coach publishes a grade that just finished for a learner waiting on ``out``."""
    async with app.coach.store.session() as s:
        await s.execute(delete(Publication).where(Publication.submission_id == sub_id))
        sub = await s.get_one(Submission, sub_id)
    routes = OutboxRoutes(out, slack_actor(TEAM, LEARNER, "ada"))
    return await app.coach.publisher.publish(sub_id, graded_from(sub), routes, learner="ada")


async def a_finished_grade_survives_every_refusal(
    slack: Workspace, app: App, sub_id: int, daily_ts: str
) -> None:
    """The grade the loop made, published again while Slack refuses route after route: each
    refusal moves on to the next route, and the grade stays done."""
    fake, client = slack.fake, slack.bot.bolt.client

    # the day's post was deleted: the score card goes in the channel instead
    del fake.messages[CHANNEL, daily_ts]
    out = SlackOutbox(client, user=LEARNER, channel="C1", post_channel=CHANNEL)
    pub = await publish_again(app, sub_id, out)
    assert pub.status == "published" and not pub.channel_error
    card = next(c for c in reversed(fake.calls) if posted(CHANNEL, "scored")(c))
    assert pub.card_ref == f"{CHANNEL}/{card.answer['ts']}" and not card.args.get("thread_ts")
    refused = [c for c in fake.calls_to("chat.postMessage") if c.args.get("thread_ts") == daily_ts]
    assert refused[-1].answer["error"] == "thread_not_found"

    # and the channel is archived: the report by DM says why the card is not there
    fake.channels[CHANNEL].archived = True
    pub = await publish_again(app, sub_id, out)
    assert pub.card_ref == SKIPPED and pub.status == "published"
    assert f"#{CHANNEL.lower()} is archived: unarchive it" in (pub.channel_error or "")
    report = next(c for c in reversed(fake.calls) if posted(DM, "Not posted in the channel")(c))
    assert "is archived" in report.dump
    fake.channels[CHANNEL].archived = False

    # results go to a private channel the bot was not added to, and DMs are closed: the
    # interaction's private reply carries the report and the fix for the admin
    fake.add_channel("GRESULTS", member=False)
    fake.dm_closed.add(LEARNER)
    url = fake.response_url("republish")
    out = SlackOutbox(client, user=LEARNER, post_channel="GRESULTS", response_url=url)
    pub = await publish_again(app, sub_id, out)
    assert pub.card_ref == SKIPPED and pub.report_ref and pub.report_ref.startswith("ephemeral:")
    (reply,) = [c for c in fake.calls_to("response_url") if c.args["key"] == "republish"]
    assert "/invite @Cruscible" in reply.dump and "Not posted in the channel" in reply.dump
    assert reply.args["response_type"] == "ephemeral"

    # the grade outlived its interaction too: nothing reaches the learner but App Home
    late = time.monotonic() - 30 * 60
    out = SlackOutbox(client, user=LEARNER, post_channel="GRESULTS", received_at=late)
    out.response_url = fake.response_url("expired")
    pub = await publish_again(app, sub_id, out)
    assert pub.report_ref == NOTED and "cannot_dm_user" not in (pub.note or "")
    assert "direct messages from Cruscible are closed" in (pub.note or "")
    before = len(fake.calls)
    await slack.sender.event({"type": "app_home_opened", "user": LEARNER, "tab": "home"})
    home = await fake.wait_for(lambda c: c.method == "views.publish" and c in fake.calls[before:])
    text = json.dumps(home.args["view"])
    assert "Results I could not deliver" in text and "messages from Cruscible are closed" in text
    fake.dm_closed.discard(LEARNER)

    # Slack is rate-limiting past the client's retries: the card waits, and the scheduled
    # retry posts it through the workspace's channels (the thread is gone: in the channel)
    fake.rate_limited["chat.postMessage"] = 4
    out = SlackOutbox(client, user=LEARNER, channel="C1", post_channel=CHANNEL)
    pub = await publish_again(app, sub_id, out)
    assert pub.status == "pending" and pub.card_ref is None and pub.report_ref
    async with app.coach.store.session() as s:
        (await s.get_one(Publication, pub.id)).next_attempt_at = datetime.now(UTC)
        assert (await s.get_one(Submission, sub_id)).status == "done"
    app.coach.channels.register(PLATFORM, SlackChannels(slack.bot.client_for))
    try:
        assert await app.coach.publisher.retry_due() == 1
    finally:
        app.coach.channels.unregister(PLATFORM)
    async with app.coach.store.session() as s:
        retried = await s.get_one(Publication, pub.id)
    assert retried.status == "published" and retried.card_ref.startswith(f"{CHANNEL}/")
    card = next(c for c in reversed(fake.calls) if posted(CHANNEL, "scored")(c))
    assert "thread_ts" not in card.args or card.args["thread_ts"] is None
