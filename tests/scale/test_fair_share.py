"""The per-community share over replicas: a worker process claims the next grade in the fair
order across communities, so a community that queued one grade after a busy one queued ten
starts before most of them, and its learner is shown the place that is true."""

from __future__ import annotations

import asyncio

from bot.core.outbox import Actor
from tests.scale.conftest import RecordingOutbox, Workers, front_end, until

BUSY = [Actor("console", f"a{i}", f"A{i}") for i in range(10)]
QUIET = Actor("console", "b0", "B0")


async def test_a_quiet_community_starts_before_a_busy_ones_backlog(
    db_url: str, workers: Workers, probed
) -> None:
    async with front_end(db_url, workers.root) as a, front_end(db_url, workers.root) as b:
        busy = await a.coach.communities.get("console", "busy", "busy")
        quiet = await b.coach.communities.get("console", "quiet", "quiet")
        workers.start(concurrency=1)
        await workers.registered(1)
        outs = {actor.id: RecordingOutbox() for actor in [*BUSY, QUIET]}
        tasks = [
            asyncio.create_task(
                a.coach.submit(
                    actor, "rate-limiter", probed.url(0.3, actor.id), outs[actor.id], community=busy
                )
            )
            for actor in BUSY
        ]
        await until(lambda: all(outs[x.id].replies for x in BUSY))  # all ten in the store

        tasks.append(  # through the other replica
            asyncio.create_task(
                b.coach.submit(
                    QUIET, "rate-limiter", probed.url(0.3, "b0"), outs["b0"], community=quiet
                )
            )
        )
        done = await asyncio.wait_for(asyncio.gather(*tasks), 90)

        assert [s.status for s in done] == ["done"] * 11
        assert sorted(probed.order) == sorted(x.id for x in [*BUSY, QUIET])
        assert probed.order.index("b0") <= 1, probed.order  # at most one (started) before it
        by_id = [s.url.rsplit("/", 1)[1] for s in sorted(done[:-1], key=lambda s: s.id)]
        assert [t for t in probed.order if t != "b0"] == by_id  # the busy one's own order kept
        # queued behind the one busy grade in progress, or taken at once by the worker between two
        first = outs["b0"].shown()[0]
        assert first.endswith(("queued — position 1", ": starting")), outs["b0"].shown()
