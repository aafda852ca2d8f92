"""A per-community share of the grading queue (SQLite, one process): a busy community cannot
starve a quiet one, and the places shown count what really starts first."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bot.core.outbox import Actor
from tests.community.support import (
    Clock,
    RecordingChannels,
    ScriptedGrader,
    coach_over,
    community,
    until,
)
from tests.support.outbox import RecordingOutbox

BUSY = [Actor("test", f"a{i}", f"a{i}") for i in range(10)]
QUIET = Actor("test", "b0", "b0")


def url(actor: Actor) -> str:
    return f"http://127.0.0.1:9/{actor.id}"


async def test_a_quiet_community_is_not_starved_by_a_busy_one(home: Path, clock: Clock) -> None:
    grader = ScriptedGrader()
    for actor in [*BUSY, QUIET]:
        grader.gate(url(actor))
    async with coach_over(home, clock=clock, grader=grader, channels=RecordingChannels()) as coach:
        a, b = await community(coach, name="a"), await community(coach, name="b")
        boxes = {actor.id: RecordingOutbox() for actor in [*BUSY, QUIET]}
        tasks = []
        for actor in BUSY:  # community a queues 10 grades; its first starts
            tasks.append(
                asyncio.create_task(
                    coach.submit(actor, "rate-limiter", url(actor), boxes[actor.id], community=a)
                )
            )
            await until(lambda actor=actor: boxes[actor.id].replies)
        await until(lambda: grader.started == [url(BUSY[0])])
        assert boxes["a9"].replies[0][1].body == "queued — position 9"

        tasks.append(  # then community b queues 1: it goes before a's nine waiting
            asyncio.create_task(
                coach.submit(QUIET, "rate-limiter", url(QUIET), boxes["b0"], community=b)
            )
        )
        await until(lambda: boxes["b0"].replies)
        assert boxes["b0"].replies[0][1].body == "queued — position 1"
        await until(lambda: any("position 10" in m.body for _, m in boxes["a9"].edits))

        for actor in [*BUSY, QUIET]:
            grader.gates[url(actor)].set()
        done = await asyncio.wait_for(asyncio.gather(*tasks), 30)

        assert [s.status for s in done] == ["done"] * 11
        assert grader.started == [url(x) for x in [BUSY[0], QUIET, *BUSY[1:]]]
