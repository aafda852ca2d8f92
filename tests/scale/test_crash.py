"""A worker killed mid-grade (kill -9): another worker grades the submission again, it is
published once, and the learner's progress message says the grade restarted."""

from __future__ import annotations

import asyncio
import os
import signal

from sqlalchemy import select

from bot.core.outbox import Actor
from bot.store import Publication, Submission
from tests.scale.conftest import RecordingOutbox, Workers, front_end, until


async def test_killed_worker_grade_restarts_elsewhere_and_is_published_once(
    db_url: str, workers: Workers, probed
) -> None:
    async with front_end(db_url, workers.root) as app:
        first, second = workers.start(), workers.start()
        await workers.registered(2)
        out, actor = RecordingOutbox(), Actor("console", "ada", "Ada")
        submitted = asyncio.create_task(
            app.coach.submit(actor, "rate-limiter", probed.url(4, "ada"), out)
        )
        await until(lambda: probed.hits["ada"] >= 5)
        victim = workers.by_pid(probed.pids["ada"][0])
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(10)
        hits_at_kill = probed.hits["ada"]

        done = await asyncio.wait_for(submitted, 60)

        survivor = second if victim is first else first
        assert survivor.poll() is None, workers.logs()
        assert done.status == "done" and done.score == 80, done.error
        assert done.attempts == 2  # started once per worker: the kill counted as a start
        assert probed.pids["ada"] == [victim.pid, survivor.pid]  # graded again, elsewhere
        assert probed.hits["ada"] > hits_at_kill
        assert any("restarted" in line for line in out.shown()), out.shown()

        await until(lambda: any("scored 80/100" in m.title for m in out.posts))
        await asyncio.sleep(1.0)  # a second publication would come from the settle job now
        cards = [m for m in out.posts if "scored" in m.title]
        assert len(cards) == 1, [m.title for m in out.posts]
        async with app.store.session() as s:
            pub = await s.scalar(select(Publication).where(Publication.submission_id == done.id))
            sub = await s.get_one(Submission, done.id)
        assert pub is not None and pub.status == "published" and pub.attempts == 1
        assert sub.status == "done"
