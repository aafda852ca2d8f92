"""Leaderboards: one self-updating message per channel, all-time and per-challenge boards,
privacy opt-out; streaks in each learner's timezone; per-learner rate limits."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from bot.core.commands import dispatch
from bot.core.outbox import Actor
from bot.core.ratelimit import RateLimiter
from bot.core.streaks import current_streak
from tests.community.support import (
    Clock,
    RecordingChannels,
    ScriptedGrader,
    coach_over,
    community,
    record,
)
from tests.support.outbox import RecordingOutbox

ADMIN = Actor("test", "99", "admin")
ADA, BOB, CY = (Actor("test", str(i), n) for i, n in enumerate(("ada", "bob", "cy")))
T0 = datetime(2026, 11, 30, 7, 0, tzinfo=UTC)


async def test_one_board_message_per_channel_edited_after_each_grade(
    home: Path, clock: Clock
) -> None:
    channels = RecordingChannels()
    grader = ScriptedGrader(scores={"http://127.0.0.1:9/ada": 88})
    async with coach_over(home, clock=clock, grader=grader, channels=channels) as coach:
        where = await community(coach)
        box = RecordingOutbox()
        await dispatch(coach, ADMIN, "admin leaderboard", box, community=where, admin=True)
        (board,) = channels.posts
        assert board.message.body == "No graded submission yet."

        await coach.submit(
            ADA, "rate-limiter", "http://127.0.0.1:9/ada", RecordingOutbox(), community=where
        )
        await coach.boards.refresh()
        ref, shown = channels.edits[-1]
        assert ref == board.ref and shown.body == "1. ada — 88 (1 try)"
        assert len(channels.posts) == 1  # edited, never posted again

        # the same channel, another board: still one message, now the challenge's
        await dispatch(
            coach, ADMIN, "admin leaderboard rate-limiter", box, community=where, admin=True
        )
        assert channels.edits[-1] == (board.ref, channels.edits[-1][1])
        assert channels.edits[-1][1].title == "Leaderboard — rate-limiter"

        channels.gone.add(board.ref)  # someone deleted it: posted anew, the new ref kept
        await coach.boards.refresh()
        assert len(channels.posts) == 2
        await coach.boards.refresh()
        assert channels.edits[-1][0] == channels.posts[-1].ref

    async with coach_over(home, clock=clock, channels=channels) as coach:  # a restart
        await coach.boards.refresh()
        assert channels.edits[-1][0] == channels.posts[-1].ref and len(channels.posts) == 2


async def test_boards_rank_best_scores_and_hide_who_opted_out(home: Path, clock: Clock) -> None:
    async with coach_over(home, clock=clock) as coach:
        await record(coach, ADA, 60, T0)
        await record(coach, ADA, 90, T0 + timedelta(hours=1))
        await record(coach, BOB, 90, T0 + timedelta(minutes=30))  # ties ada, earlier
        await record(coach, BOB, 50, T0, challenge="url-shortener")
        await record(coach, CY, 95, T0, challenge="url-shortener")
        await record(coach, CY, None, T0, status="error")
        box = RecordingOutbox()
        await dispatch(coach, ADA, "leaderboard rate-limiter", box)
        assert box.replies[-1][1].body.splitlines() == [
            "1. bob — 90/100 (1 try)",
            "2. ada — 90/100 (2 tries)",
        ]
        await dispatch(coach, ADA, "leaderboard", box)
        assert box.replies[-1][1].body.splitlines() == [
            "1. bob — 140 (2 tries)",
            "2. cy — 95 (1 try)",
            "3. ada — 90 (2 tries)",
        ]

        await dispatch(coach, BOB, "privacy on", box)
        assert "hidden from public leaderboards" in box.replies[-1][1].body
        await dispatch(coach, ADA, "leaderboard rate-limiter", box)
        assert box.replies[-1][1].body == "1. ada — 90/100 (2 tries)"
        await dispatch(coach, BOB, "results", box)
        assert box.replies[-1][1].footer == "hidden from public boards (privacy on)"
        await dispatch(coach, BOB, "privacy off", box)
        await dispatch(coach, ADA, "leaderboard rate-limiter", box)
        assert box.replies[-1][1].body.startswith("1. bob")


def test_a_streak_forgives_one_missed_day_not_two() -> None:
    d = date(2026, 12, 10)
    days = {d - timedelta(n) for n in (0, 1, 3, 4, 7)}  # a miss on day 2, two on days 5-6
    assert current_streak(days, d) == 4
    assert current_streak(days, d + timedelta(1)) == 4  # yesterday counts: still alive
    assert current_streak(days, d + timedelta(2)) == 4  # one missed day: still alive
    assert current_streak(days, d + timedelta(3)) == 0  # two: gone
    assert current_streak(set(), d) == 0


async def test_streaks_follow_each_learners_own_timezone(home: Path, clock: Clock) -> None:
    """The same UTC moments are an unbroken chain in Los Angeles and a broken one in Tokyo."""
    async with coach_over(home, clock=clock) as coach:
        moments = [datetime(2026, 12, d, 14, 30, tzinfo=UTC) for d in (1, 2)] + [
            datetime(2026, 12, 4, 16, 0, tzinfo=UTC)
        ]
        for who, zone in ((ADA, "Asia/Tokyo"), (BOB, "America/Los_Angeles")):
            box = RecordingOutbox()
            await dispatch(coach, who, f"timezone {zone}", box)
            assert zone in box.replies[-1][1].body
            for at in moments:
                await record(coach, who, 50, at)
        # Tokyo: Dec 1 23:30, Dec 2 23:30, Dec 5 01:00 — two missed days: the chain restarts
        # LA: Dec 1 06:30, Dec 2 06:30, Dec 4 08:00 — one missed day, forgiven: 3
        clock.now = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)  # Tokyo Dec 5, LA Dec 5 04:00
        assert [await coach.streak(await coach.user(a)) for a in (ADA, BOB)] == [1, 3]
        clock.now = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)  # Tokyo Dec 7 18:00, LA Dec 7 01:00
        assert [await coach.streak(await coach.user(a)) for a in (ADA, BOB)] == [1, 0]
        box = RecordingOutbox()
        await dispatch(coach, ADA, "results", box)
        assert [(f.name, f.value) for f in box.replies[-1][1].fields] == [("Streak", "1 day")]
        await dispatch(coach, BOB, "timezone Mars/Olympus", box)
        assert "is not a timezone" in box.replies[-1][1].body


def test_the_token_bucket_refuses_then_refills() -> None:
    t = [0.0]
    limits = RateLimiter(per_minute=30, burst=3, clock=lambda: t[0])
    for _ in range(3):
        limits.take("ada")
    try:
        limits.take("ada")
    except Exception as exc:
        assert str(exc) == "slow down: too many commands in a row — try again in 2 s"
    else:
        raise AssertionError("a fourth command at once was accepted")
    limits.take("bob")  # others are not affected
    t[0] = 2.0  # 30/min: one token every 2 s
    limits.take("ada")


async def test_commands_over_the_limit_get_a_clear_refusal(home: Path, clock: Clock) -> None:
    async with coach_over(home, clock=clock, commands_per_minute=6, command_burst=2) as coach:
        box = RecordingOutbox()
        for _ in range(3):
            await dispatch(coach, ADA, "today", box)
        first, second, third = (m for _, m in box.replies)
        assert first.title.startswith("Today's challenge") and second.title == first.title
        assert third.title == "That did not work" and third.body.startswith("slow down")
        await dispatch(coach, BOB, "today", box)
        assert box.replies[-1][1].title.startswith("Today's challenge")


async def test_only_graded_submissions_make_a_streak(home: Path, clock: Clock) -> None:
    """A refused URL, an error or a cancelled grade on a day does not keep the streak alive."""
    async with coach_over(home, clock=clock) as coach:
        day = [datetime(2026, 12, d, 12, 0, tzinfo=UTC) for d in range(1, 6)]
        await record(coach, ADA, 80, day[0])
        await record(coach, ADA, 20, day[1])  # graded, failed: still a graded day
        await record(coach, ADA, None, day[2], status="error")
        await record(coach, ADA, None, day[3], status="error")
        await record(coach, ADA, None, day[4], status="cancelled")
        clock.now = day[4]
        assert await coach.streak(await coach.user(ADA)) == 0  # Dec 3-5 hold no grade
        await record(coach, ADA, 90, day[4])
        assert await coach.streak(await coach.user(ADA)) == 1  # the chain restarts on Dec 5
        clock.now = day[2]
        assert await coach.streak(await coach.user(ADA)) == 2  # as seen on Dec 3: Dec 1-2
