"""A worker killed mid-grade (kill -9): another worker grades the submission again, it is
published once, and the learner's progress message says the grade restarted. A front end
process killed mid-grade (kill -9, ``tests.scale.front``): another answers the next command,
tells of the restart, publishes, and finishes the progress message the killed one held."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import pytest
from sqlalchemy import select

from bot.core.commands import dispatch
from bot.core.errors import CoachError
from bot.core.jobs import PROGRESS_ELSEWHERE
from bot.core.outbox import Actor
from bot.store import Publication, Submission
from tests.community.support import RecordingChannels
from tests.scale.conftest import RecordingOutbox, Workers, front_end, until
from tests.scale.front import HELD


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
        assert any("load (" in line for line in out.shown())  # the worker's progress, shown here

        await until(lambda: any("scored 80/100" in m.title for m in out.posts))
        await asyncio.sleep(1.0)  # a second publication would come from the settle job now
        cards = [m for m in out.posts if "scored" in m.title]
        assert len(cards) == 1, [m.title for m in out.posts]
        async with app.store.session() as s:
            pub = await s.scalar(select(Publication).where(Publication.submission_id == done.id))
            sub = await s.get_one(Submission, done.id)
        assert pub is not None and pub.status == "published" and pub.attempts == 1
        assert sub.status == "done"


async def test_a_stopped_worker_gives_its_grade_back_uncounted(
    db_url: str, workers: Workers, probed
) -> None:
    async with front_end(db_url, workers.root) as app:
        workers.start()
        workers.start()
        await workers.registered(2)
        actor = Actor("console", "bo", "Bo")
        submitted = asyncio.create_task(
            app.coach.submit(actor, "rate-limiter", probed.url(60, "bo"), RecordingOutbox())
        )
        await until(lambda: probed.hits["bo"] >= 5)
        stopped = workers.by_pid(probed.pids["bo"][0])

        stopped.send_signal(signal.SIGTERM)  # a deploy: the grade is aborted after its grace

        assert await asyncio.to_thread(stopped.wait, 30) == 0, workers.logs()
        try:
            await until(lambda: len(probed.pids["bo"]) == 2, within=30)  # the other took it
        except TimeoutError:
            raise AssertionError(workers.logs()) from None
        assert probed.pids["bo"][1] != stopped.pid
        async with app.store.session() as s:
            sub = await s.scalar(select(Submission).where(Submission.url == probed.url(60, "bo")))
        assert sub is not None and sub.status == "running"
        assert sub.attempts == 1  # a graceful stop is not a failed start
        await app.coach.cancel(actor)
        assert (await asyncio.wait_for(submitted, 30)).status == "cancelled"


async def test_a_killed_front_end_leaves_its_learner_to_another(
    db_url: str, workers: Workers, probed
) -> None:
    async with front_end(db_url, workers.root) as other:
        workers.start()
        workers.start()
        await workers.registered(2)
        url = probed.url(3, "cy")
        log = workers.root / f"worker-{len(workers.procs)}.log"
        gone = workers.start(argv=[sys.executable, "-m", "tests.scale.front", "cy", url])

        def held() -> bool:
            assert gone.poll() is None, workers.logs()
            return f"{HELD} " in log.read_text(errors="replace")

        await until(held, within=30)
        await until(lambda: probed.hits["cy"] >= 3)  # graded on a worker, followed by `gone`
        gone.send_signal(signal.SIGKILL)
        assert await asyncio.to_thread(gone.wait, 10) == -signal.SIGKILL

        cy = Actor("console", "cy", "Cy")
        answer = RecordingOutbox()
        await dispatch(other.coach, cy, "results", answer)  # the other answers at once
        assert answer.replies and answer.replies[0].title != "That did not work", answer.replies
        async with other.store.session() as s:
            sub = await s.scalar(select(Submission).where(Submission.url == url))
        assert sub is not None and sub.progress_holder is not None  # left by the killed one
        os.kill(probed.pids["cy"][0], signal.SIGKILL)  # and its grade's worker too
        channels = other.coach.channels.get("console")
        assert isinstance(channels, RecordingChannels)

        await until(lambda: any("restarted" in m.body for _, m in channels.dms), within=30)

        async def published() -> Publication | None:
            async with other.store.session() as s:
                return await s.scalar(
                    select(Publication).where(
                        Publication.submission_id == sub.id, Publication.status == "published"
                    )
                )

        async with asyncio.timeout(30):
            while await published() is None:  # noqa: ASYNC110 — published by the other
                await asyncio.sleep(0.1)
        assert len(probed.pids["cy"]) == 2  # graded again on the surviving worker

        async def finished() -> Submission:
            async with other.store.session() as s:
                return await s.get_one(Submission, sub.id)

        async with asyncio.timeout(30):  # the killed front end's progress message, finished here
            while (await finished()).progress_holder is not None:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        assert (await finished()).status == "done"
        assert (await finished()).progress_note == PROGRESS_ELSEWHERE
        await until(lambda: len(channels.dms) == 3)
        assert [uid for uid, _ in channels.dms] == ["cy"] * 3  # restart, report, final state
        assert "restarted" in channels.dms[0][1].body
        assert any(
            (m.title, m.body) == ("Grading rate-limiter…", "graded") for _, m in channels.dms
        )


async def test_a_front_end_stopped_cleanly_leaves_its_learner_to_another(
    db_url: str, workers: Workers, probed
) -> None:
    """A rolling deploy: the replica a learner submitted through stops (its context closes,
    as SIGTERM does to ``cruscible run``) while a worker grades; the grade goes on, another
    replica publishes it once and finishes the learner's progress privately."""
    async with front_end(db_url, workers.root) as other:
        workers.start()
        await workers.registered(1)
        url = probed.url(3, "dee")
        dee = Actor("console", "dee", "Dee")
        async with front_end(db_url, workers.root) as leaving:
            waiting = asyncio.create_task(
                leaving.coach.submit(dee, "rate-limiter", url, RecordingOutbox())
            )
            await until(lambda: probed.hits["dee"] >= 2)  # graded on the worker
        with pytest.raises(CoachError, match="the bot is restarting"):  # no longer waited for
            await asyncio.wait_for(waiting, 10)

        channels = other.coach.channels.get("console")
        assert isinstance(channels, RecordingChannels)

        async def submission() -> Submission:
            async with other.store.session() as s:
                found = await s.scalar(select(Submission).where(Submission.url == url))
                assert found is not None
                return found

        async with asyncio.timeout(30):
            while (await submission()).progress_holder is not None:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        sub = await submission()
        assert (sub.status, sub.progress_note) == ("done", PROGRESS_ELSEWHERE)
        async with other.store.session() as s:
            published = (
                await s.scalars(select(Publication).where(Publication.submission_id == sub.id))
            ).all()
        assert [p.status for p in published] == ["published"]
        assert len(probed.pids["dee"]) == 1  # graded once, never restarted
        await until(lambda: len(channels.dms) == 2)
        assert [uid for uid, _ in channels.dms] == ["dee"] * 2  # the report, the final state
        assert not any("restarted" in m.body for _, m in channels.dms)
