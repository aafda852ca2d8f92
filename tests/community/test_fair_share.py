"""A per-community share of the grading queue (SQLite, one process): a busy community cannot
starve a quiet one, the quiet one takes turns rather than jumping the queue at every grade, and
the places shown count what really starts first."""

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
QUIET = [Actor("test", f"b{i}", f"b{i}") for i in range(2)]


def url(actor: Actor) -> str:
    return f"http://127.0.0.1:9/{actor.id}"


async def test_communities_take_turns_and_places_say_so(home: Path, clock: Clock) -> None:
    grader = ScriptedGrader()
    for actor in [*BUSY, *QUIET]:
        grader.gate(url(actor))
    async with coach_over(home, clock=clock, grader=grader, channels=RecordingChannels()) as coach:
        a, b = await community(coach, name="a"), await community(coach, name="b")
        boxes = {actor.id: RecordingOutbox() for actor in [*BUSY, *QUIET]}

        def submit(actor: Actor, where) -> asyncio.Task:  # type: ignore[no-untyped-def]
            return asyncio.create_task(
                coach.submit(actor, "rate-limiter", url(actor), boxes[actor.id], community=where)
            )

        tasks = {}
        for actor in BUSY:  # community a queues 10 grades; its first starts
            tasks[actor.id] = submit(actor, a)
            await until(lambda actor=actor: boxes[actor.id].replies)
        await until(lambda: grader.started == [url(BUSY[0])])
        assert boxes["a9"].replies[0][1].body == "queued — position 9"

        tasks["b0"] = submit(QUIET[0], b)  # then b queues 1: before a's nine waiting
        await until(lambda: boxes["b0"].replies)
        assert boxes["b0"].replies[0][1].body == "queued — position 1"
        await until(lambda: any("position 10" in m.body for _, m in boxes["a9"].edits))

        grader.gates[url(BUSY[0])].set()
        await until(lambda: url(QUIET[0]) in grader.started)

        tasks["b1"] = submit(QUIET[1], b)  # b again while its first grades: after a's next turn
        await until(lambda: boxes["b1"].replies)
        assert boxes["b1"].replies[0][1].body == "queued — position 2"

        for gate in grader.gates.values():
            gate.set()
        done = await asyncio.wait_for(asyncio.gather(*tasks.values()), 30)

        assert [s.status for s in done] == ["done"] * 12
        order = [BUSY[0], QUIET[0], BUSY[1], QUIET[1], *BUSY[2:]]
        assert grader.started == [url(x) for x in order]
