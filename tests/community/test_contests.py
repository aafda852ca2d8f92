"""A weekly contest from the admin command to the final standings, under a controlled clock:
best score in the window, ties to the earlier submission, after the close graded not ranked."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bot.core.commands import dispatch
from bot.core.outbox import Actor
from bot.scheduler import Operations
from tests.community.support import (
    Clock,
    RecordingChannels,
    ScriptedGrader,
    coach_over,
    community,
    record,
    until,
)
from tests.support.outbox import RecordingOutbox

ADMIN = Actor("test", "99", "admin")
ADA, BOB, CY, DEE = (Actor("test", str(i), n) for i, n in enumerate(("ada", "bob", "cy", "dee")))
START = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)  # 09:00 in Paris
END = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)


async def test_a_contest_from_opening_to_final_standings(home: Path, clock: Clock) -> None:
    channels = RecordingChannels()
    async with coach_over(home, clock=clock, channels=channels) as coach:
        where = await community(coach, tz="Europe/Paris")
        box = RecordingOutbox()
        clock.now = START - timedelta(days=2)
        await dispatch(
            coach,
            ADMIN,
            "admin contest create rate-limiter 2026-11-30T09:00 2026-12-07T09:00",
            box,
            community=where,
            admin=True,
        )
        assert box.replies[-1][1].title == "Contest #1: rate-limiter (upcoming)"
        contest = await coach.contests.get(1)
        assert contest is not None and (contest.starts_at, contest.ends_at) == (START, END)
        assert await coach.contests.advance(1) == []  # nothing is due yet

        clock.now = START
        assert await coach.contests.advance(1) == ["open"]
        opening = channels.posts[-1]
        assert opening.ping and opening.message.title.startswith("Contest #1 is open")
        assert [b.action for b in opening.message.buttons] == ["start:rate-limiter"]

        await record(coach, ADA, 70, START + timedelta(hours=1), where=where)
        await record(coach, ADA, 85, START + timedelta(days=2), where=where)  # her best
        await record(coach, BOB, 85, START + timedelta(days=1), where=where)  # same, earlier
        await record(coach, CY, 60, START - timedelta(minutes=1), where=where)  # before
        await record(coach, CY, 40, START + timedelta(days=3), where=where)
        await record(
            coach, DEE, 99, START + timedelta(days=1), where=where, challenge="url-shortener"
        )

        clock.now = END - timedelta(hours=24)
        assert await coach.contests.advance(1) == ["remind"]
        assert channels.posts[-1].message.title == (
            "Contest #1 closes in about 24 h — standings so far"
        )

        clock.now = END
        await record(coach, CY, 100, END, where=where)  # at the close: graded, not ranked
        assert await coach.contests.advance(1) == ["close", "standings"]
        closing, final = channels.posts[-2:]
        assert closing.message.title == "Contest #1 (rate-limiter) is closed"
        assert final.message.title == "Contest #1 (rate-limiter) — final standings"
        assert final.message.body.splitlines()[2:] == [
            "1. bob — 85/100 (1 try)",
            "2. ada — 85/100 (2 tries)",
            "3. cy — 40/100 (1 try)",
        ]
        assert "🏆 **bob** wins" in final.message.body

        posted = len(channels.posts)
        clock.advance(hours=1)
        assert await coach.contests.advance(1) == []  # a restart after the close: nothing again
        assert len(channels.posts) == posted

        await dispatch(coach, ADA, "contest standings", box, community=where)
        assert box.replies[-1][1].title == "Contest #1 (rate-limiter) — final standings"


async def test_final_standings_wait_for_grades_submitted_in_time(home: Path, clock: Clock) -> None:
    channels = RecordingChannels()
    grader = ScriptedGrader(scores={"http://127.0.0.1:9/late": 95})
    gate = grader.gate("http://127.0.0.1:9/late")
    async with coach_over(home, clock=clock, grader=grader, channels=channels) as coach:
        where = await community(coach)
        clock.now = START
        contest = await coach.contests.create(
            where, "rate-limiter", START, END, created_by=ADMIN.id
        )
        await record(coach, ADA, 70, START + timedelta(days=1), where=where)
        clock.now = END - timedelta(minutes=1)
        task = asyncio.create_task(
            coach.submit(
                BOB, "rate-limiter", "http://127.0.0.1:9/late", RecordingOutbox(), community=where
            )
        )
        await until(lambda: grader.started)
        # An entry's load runs at the floor on whichever worker grades it: entries rank equally.
        (scale,) = grader.scales
        assert scale is not None and (scale.basis, scale.rate) == ("floor", 400)
        assert scale.note.startswith(f"contest #{contest.id}: every entry is graded at")
        clock.now = END  # (the opening was missed entirely: not announced after the close)
        assert await coach.contests.advance(contest.id) == ["close"]
        assert "still grading" in channels.posts[-1].message.body
        assert not any("final standings" in t for t in channels.titles())
        gate.set()
        await task
        await coach.queue.idle()
        await coach.submit(
            ADA, "url-shortener", "http://127.0.0.1:9/other", RecordingOutbox(), community=where
        )
        await coach.queue.idle()
        assert grader.scales[-1] is None  # another challenge, after the close: the worker's own
        final = channels.posts[-1].message
        assert final.title.endswith("final standings")
        assert final.body.splitlines()[2:] == ["1. bob — 95/100 (1 try)", "2. ada — 70/100 (1 try)"]


async def test_contest_commands_are_for_admins_and_jobs_are_planned(
    home: Path, clock: Clock
) -> None:
    channels = RecordingChannels()
    async with coach_over(home, clock=clock, channels=channels) as coach:
        where = await community(coach, tz="Europe/Paris")
        box = RecordingOutbox()
        command = "admin contest create rate-limiter 2026-11-30T09:00 2026-12-07T09:00"
        await dispatch(coach, ADA, command, box, community=where)
        assert "admin commands are for the community's admins" in box.replies[-1][1].body
        ops = Operations(coach, clock=clock)
        await ops.start()
        try:
            await dispatch(coach, ADMIN, command, box, community=where, admin=True)
            runs = ops.next_runs()
            assert runs["contest:1:open"] == START
            assert runs["contest:1:remind"] == END - timedelta(hours=24)
            assert runs["contest:1:close"] == END
            await dispatch(coach, ADMIN, "admin contest cancel 1", box, community=where, admin=True)
            assert not any(job.startswith("contest:") for job in ops.next_runs())
        finally:
            await ops.stop()
        await dispatch(coach, ADA, "contest", box, community=where)
        assert box.replies[-1][1].body == "No contest here yet."
