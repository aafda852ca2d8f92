"""The whole loop through Slack: daily post → Start → bundle by DM → /cruscible submit → thread.

One real grade of a reference design on real provisioning; every call to Slack is recorded.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from bot.adapters.slack.daily import post_daily
from bot.adapters.slack.outbox import slack_actor
from bot.app import App
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

    await coach.destroy_environment(env.id)
