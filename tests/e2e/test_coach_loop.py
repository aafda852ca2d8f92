"""The coach loop end to end on real infrastructure: post → Start → bundle by DM → submit → results."""

from __future__ import annotations

import pytest

from bot.app import App
from bot.core.commands import dispatch, press
from bot.core.outbox import Actor
from challenges.launch import running
from tests.support.outbox import RecordingOutbox

pytestmark = pytest.mark.slow
LEARNER = Actor("test", "u-1", "grace")


async def test_whole_loop_keeps_secrets_out_of_the_channel(app: App) -> None:
    coach = app.coach
    box = RecordingOutbox()
    post = coach.daily_post("rate-limiter")
    assert [b.action for b in post.buttons] == ["start:rate-limiter", "tradeoffs:rate-limiter"]
    await box.post(post)

    await press(coach, LEARNER, "start:rate-limiter", box)
    envs = await coach.environments(LEARNER)
    assert len(envs) == 1
    env = envs[0]
    assert {r.value for r in env.resources} == {"postgres", "redis"}
    ((actor, dm),) = box.dms
    assert actor == LEARNER
    assert env.bundle["DATABASE_URL"] in dm.body and env.bundle["REDIS_URL"] in dm.body
    assert "RATE_LIMIT=20" in dm.body

    solution = coach.challenge("rate-limiter").solution("redis_lua")
    async with running(solution.module, env.bundle) as service:
        await dispatch(coach, LEARNER, f"submit rate-limiter {service.url}", box)

    sub_messages = [m for _, _, m in box.posts]
    card = next(m for m in sub_messages if "scored" in m.title)
    assert "/100" in card.title
    assert any(f.suffix == ".png" and f.is_file() for f in card.files)
    discussion = next(m for m in sub_messages if m.title.startswith("Trade-offs"))
    assert "Redis" in discussion.body
    full = box.dms[-1][1]
    assert full.title == "Your full grade report"
    assert any(f.name == "report.json" for f in full.files)

    await dispatch(coach, LEARNER, "results", box)
    assert "rate-limiter" in box.replies[-1][1].body
    await dispatch(coach, LEARNER, "leaderboard rate-limiter", box)
    assert "grace" in box.replies[-1][1].body

    for secret in env.secrets():
        assert secret not in box.public_text()

    await dispatch(coach, LEARNER, f"env destroy {env.id}", box)
    assert await coach.environments(LEARNER) == []


async def test_closed_dms_fall_back_to_a_private_reply(app: App) -> None:
    box = RecordingOutbox(dms_closed=True)
    env = await app.coach.provision(Actor("test", "u-2", "linus"), "rate-limiter", box)
    try:
        assert not box.posts
        assert any(env.bundle["REDIS_URL"] in m.body for _, m in box.edits)
    finally:
        await app.coach.destroy_environment(env.id)


@pytest.mark.parametrize(
    ("command", "reason"),
    [
        ("provision nope", "unknown challenge 'nope'"),
        ("submit rate-limiter ftp://example", "is not an http(s) URL"),
        ("env destroy env-000000", "you have no environment 'env-000000'"),
        ("dance", "unknown command"),
        ('submit "unclosed', "could not read that command"),
    ],
)
async def test_bad_commands_get_a_clear_private_error(app: App, command: str, reason: str) -> None:
    box = RecordingOutbox()
    await dispatch(app.coach, LEARNER, command, box)
    assert not box.posts
    assert reason in box.replies[-1][1].body
