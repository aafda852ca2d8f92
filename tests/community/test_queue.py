"""The grading queue: bounded concurrency, positions, one per learner, cancellation, and no
submission lost across a restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.core.commands import dispatch
from bot.core.errors import CoachError
from bot.core.outbox import Actor
from bot.store import Submission
from tests.community.support import (
    Clock,
    RecordingChannels,
    ScriptedGrader,
    coach_over,
    community,
    until,
)
from tests.support.outbox import RecordingOutbox

ADA, BOB, CY = (Actor("test", i, n) for i, n in (("1", "ada"), ("2", "bob"), ("3", "cy")))
URL = {a: f"http://127.0.0.1:9/{a.name}" for a in (ADA, BOB, CY)}


def submit(coach, actor: Actor, box: RecordingOutbox) -> asyncio.Task:  # type: ignore[no-untyped-def]
    return asyncio.create_task(coach.submit(actor, "rate-limiter", URL[actor], box))


def bodies(box: RecordingOutbox) -> list[str]:
    return [m.body for _, m in box.replies] + [m.body for _, m in box.edits]


async def test_positions_are_reported_and_updated(home: Path, clock: Clock) -> None:
    grader = ScriptedGrader(scores={URL[ADA]: 80, URL[BOB]: 60, URL[CY]: 70})
    for a in (ADA, BOB, CY):
        grader.gate(URL[a])
    async with coach_over(home, clock=clock, grader=grader) as coach:
        boxes = {a: RecordingOutbox() for a in (ADA, BOB, CY)}
        tasks = {}
        for a in (ADA, BOB, CY):
            tasks[a] = submit(coach, a, boxes[a])
            await until(lambda a=a: boxes[a].replies)
        await until(lambda: grader.started == [URL[ADA]])
        assert boxes[BOB].replies[0][1].body == "queued — position 1"
        assert boxes[CY].replies[0][1].body == "queued — position 2"

        grader.gates[URL[ADA]].set()  # ada's grade ends: bob starts, cy moves up
        ada = await tasks[ADA]
        assert (ada.status, ada.score) == ("done", 80)
        await until(lambda: "queued — position 1" in bodies(boxes[CY]))
        assert grader.started == [URL[ADA], URL[BOB]]  # concurrency 1: one at a time

        grader.gates[URL[BOB]].set()
        grader.gates[URL[CY]].set()
        assert (await tasks[BOB]).score == 60 and (await tasks[CY]).score == 70
        card = next(m for _, _, m in boxes[CY].posts if "scored" in m.title)
        assert card.title.startswith("cy scored 70/100")


async def test_concurrency_is_bounded_by_the_setting(home: Path, clock: Clock) -> None:
    grader = ScriptedGrader()
    for a in (ADA, BOB, CY):
        grader.gate(URL[a])
    async with coach_over(home, clock=clock, grader=grader, grading_concurrency=2) as coach:
        tasks = [submit(coach, a, RecordingOutbox()) for a in (ADA, BOB, CY)]
        await until(lambda: len(grader.started) == 2)
        await asyncio.sleep(0.1)
        assert len(grader.started) == 2 and await coach.queue.counts() == {
            "running": 2,
            "queued": 1,
        }
        for gate in grader.gates.values():
            gate.set()
        assert [s.status for s in await asyncio.gather(*tasks)] == ["done"] * 3


async def test_one_submission_per_learner_at_a_time(home: Path, clock: Clock) -> None:
    grader = ScriptedGrader()
    grader.gate(URL[ADA])
    async with coach_over(home, clock=clock, grader=grader) as coach:
        first = submit(coach, ADA, RecordingOutbox())
        await until(lambda: grader.started)
        box = RecordingOutbox()
        await dispatch(coach, ADA, f"submit rate-limiter {URL[ADA]}", box)
        refusal = box.replies[-1][1]
        assert refusal.title == "That did not work"
        assert "is still running — one at a time: wait for it, or `cancel` it first" in refusal.body
        grader.gates[URL[ADA]].set()
        await first
        second = await coach.submit(ADA, "rate-limiter", URL[ADA], RecordingOutbox())
        assert second.status == "done"  # once the first is done, the next is accepted


async def test_cancel_a_queued_and_a_running_grade(home: Path, clock: Clock) -> None:
    grader = ScriptedGrader()
    for a in (ADA, BOB, CY):
        grader.gate(URL[a])
    async with coach_over(home, clock=clock, grader=grader) as coach:
        boxes = {a: RecordingOutbox() for a in (ADA, BOB, CY)}
        tasks = {}
        for a in (ADA, BOB, CY):  # in this order: #1, #2, #3
            tasks[a] = submit(coach, a, boxes[a])
            await until(lambda a=a: boxes[a].replies)
        await until(lambda: grader.started)

        box = RecordingOutbox()
        await dispatch(coach, BOB, "cancel", box)  # queued: it never runs
        assert box.replies[-1][1].title.startswith("Submission #2 cancelled")
        bob = await tasks[BOB]
        assert bob.status == "cancelled"
        assert boxes[BOB].edits[-1][1].title == "Submission #2 cancelled"
        await until(lambda: "queued — position 1" in bodies(boxes[CY]))

        await dispatch(coach, ADA, "cancel", box)  # running: the grade is stopped
        assert (await tasks[ADA]).status == "cancelled"
        assert grader.cancelled == [URL[ADA]]
        await until(lambda: URL[CY] in grader.started)
        assert URL[BOB] not in grader.started

        await dispatch(coach, BOB, "cancel", box)
        assert box.replies[-1][1].title == "Nothing to cancel"
        grader.gates[URL[CY]].set()
        assert (await tasks[CY]).status == "done"


async def test_a_restart_loses_no_submission(home: Path, clock: Clock) -> None:
    """Ada's grade is running and Bob's queued when the bot stops; the next start grades both
    and, with no interaction left, publishes through the community's channels."""
    grader = ScriptedGrader()
    grader.gate(URL[ADA])
    async with coach_over(home, clock=clock, grader=grader) as coach:
        where = await community(coach)
        tasks = []
        for a in (ADA, BOB):
            box = RecordingOutbox()
            tasks.append(
                asyncio.create_task(coach.submit(a, "rate-limiter", URL[a], box, community=where))
            )
            await until(lambda box=box: box.replies)
        await until(lambda: grader.started == [URL[ADA]])
    for task in tasks:  # each learner is told the grade resumes when the bot is back
        with pytest.raises(CoachError, match="the bot is restarting"):
            await task

    channels = RecordingChannels()
    again = ScriptedGrader(scores={URL[ADA]: 90, URL[BOB]: 40})
    async with coach_over(home, clock=clock, grader=again, channels=channels) as coach:
        assert await statuses(coach) == {URL[ADA]: "running", URL[BOB]: "queued"}
        assert await coach.queue.resume() == []
        await coach.queue.idle()
        async with coach.store.session() as s:
            subs = {x.url: x for x in await s.scalars(select(Submission))}
        ada, bob = subs[URL[ADA]], subs[URL[BOB]]
        assert (ada.status, ada.score, ada.attempts) == ("done", 90, 2)
        assert (bob.status, bob.score, bob.attempts) == ("done", 40, 1)
        assert again.started == [URL[ADA], URL[BOB]]  # the interrupted one first
        assert [t for t in channels.titles() if "scored" in t] == [
            "ada scored 90/100 on rate-limiter — passed",
            "bob scored 40/100 on rate-limiter — not yet",
        ]
        assert all(p.channel_id == "#c" for p in channels.posts)
        assert [(u, m.title) for u, m in channels.dms] == [
            ("1", "Your full grade report"),
            ("2", "Your full grade report"),
        ]


async def test_a_grade_interrupted_too_often_is_reported_not_dropped(
    home: Path, clock: Clock
) -> None:
    grader = ScriptedGrader()
    grader.gate(URL[ADA])  # never opens: every start is stopped mid-grade
    async with coach_over(home, clock=clock, grader=grader) as coach:
        task = asyncio.create_task(coach.submit(ADA, "rate-limiter", URL[ADA], RecordingOutbox()))
        await until(lambda: len(grader.started) == 1)
    with pytest.raises(CoachError):
        await task
    async with coach_over(home, clock=clock, grader=grader) as coach:
        assert await coach.queue.resume() == []  # the second start
        await until(lambda: len(grader.started) == 2)

    channels = RecordingChannels()
    async with coach_over(home, clock=clock, grader=grader, channels=channels) as coach:
        given_up = await coach.queue.resume()
        assert [s.url for s in given_up] == [URL[ADA]]
        await coach.notify_interrupted(given_up)
        assert await statuses(coach) == {URL[ADA]: "error"}
        assert [(u, m.title) for u, m in channels.dms] == [
            ("1", "Your rate-limiter grade was interrupted")
        ]
        box = RecordingOutbox()
        await dispatch(coach, ADA, "results", box)
        assert "interrupted by restarts 2 times; submit again" in box.replies[-1][1].body
        assert len(grader.started) == 2


async def test_acknowledgements_stay_fast_while_grades_run(home: Path, clock: Clock) -> None:
    grader = ScriptedGrader()
    grader.gate(URL[ADA])
    async with coach_over(home, clock=clock, grader=grader) as coach:
        task = submit(coach, ADA, RecordingOutbox())
        await until(lambda: grader.started)
        loop = asyncio.get_running_loop()
        for command in ("today", "list", "results", "leaderboard", "env"):
            box = RecordingOutbox()
            began = loop.time()
            await dispatch(coach, BOB, command, box)
            assert loop.time() - began < 0.25 and box.replies
        grader.gates[URL[ADA]].set()
        await task


async def statuses(coach) -> dict[str, str]:  # type: ignore[no-untyped-def]
    async with coach.store.session() as s:
        return {x.url: x.status for x in await s.scalars(select(Submission))}
