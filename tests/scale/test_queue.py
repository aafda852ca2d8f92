"""Two chat front ends (replicas over one database) and a worker process: one grade per
learner at a time whichever replica takes the command, places in the queue counted over every
replica, a bound with "busy, try at …", and a cancel that stops a grade wherever it runs."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from bot.core.errors import CoachError
from bot.core.jobs import EngineQueue
from bot.core.outbox import Actor
from bot.store import Submission
from tests.scale.conftest import RecordingOutbox, Workers, front_end, until

ADA, BOB, CY, DEE = (Actor("console", n.lower(), n) for n in ("Ada", "Bob", "Cy", "Dee"))


def showing(out: RecordingOutbox, text: str) -> bool:
    return any(text in line for line in out.shown())


async def test_one_at_a_time_true_positions_and_a_bound_across_replicas(
    db_url: str, workers: Workers, probed
) -> None:
    async with (
        front_end(db_url, workers.root, queue_limit=2) as a,
        front_end(db_url, workers.root, queue_limit=2) as b,
    ):
        workers.start()
        await workers.registered(1)
        outs = {actor.id: RecordingOutbox() for actor in (ADA, BOB, CY)}
        ada = asyncio.create_task(
            a.coach.submit(ADA, "rate-limiter", probed.url(3, "ada"), outs["ada"])
        )
        await until(lambda: probed.hits["ada"] >= 1)

        with pytest.raises(CoachError, match="still running — one at a time"):
            await b.coach.submit(ADA, "rate-limiter", probed.url(1, "ada-again"), RecordingOutbox())
        bob = asyncio.create_task(
            b.coach.submit(BOB, "rate-limiter", probed.url(1, "bob"), outs["bob"])
        )
        await until(lambda: showing(outs["bob"], "queued — position 1"))
        cy = asyncio.create_task(
            a.coach.submit(CY, "rate-limiter", probed.url(1, "cy"), outs["cy"])
        )
        await until(lambda: showing(outs["cy"], "queued — position 2"))  # Bob's, on b, first

        with pytest.raises(
            CoachError, match=r"busy: 2 submissions are waiting; try again at \d\d:\d\d UTC"
        ):
            await b.coach.submit(DEE, "rate-limiter", probed.url(1, "dee"), RecordingOutbox())

        assert (await b.coach.cancel(CY)).title.startswith("Submission #")  # waiting, on a
        cancelled = await asyncio.wait_for(cy, 10)
        assert cancelled.status == "cancelled"

        graded = await asyncio.wait_for(asyncio.gather(ada, bob), 60)
        assert [s.status for s in graded] == ["done", "done"]
        for out in (outs["ada"], outs["bob"]):  # each saw its grade's progress on the worker
            assert showing(out, "%)"), out.shown()  # "preflight (0%)", "load (40%)" …
        async with a.store.session() as s:
            subs = list(await s.scalars(select(Submission).order_by(Submission.id)))
        first, second = (x for x in subs if x.status == "done")
        assert first.finished_at is not None and second.started_at is not None
        assert second.started_at >= first.finished_at  # the one worker slot: one after the other
        assert probed.hits["ada-again"] == probed.hits["dee"] == probed.hits["cy"] == 0
        assert [x.status for x in subs] == ["done", "done", "cancelled"]  # nothing else stored


async def test_a_cancel_stops_the_grade_on_the_worker_running_it(
    db_url: str, workers: Workers, probed
) -> None:
    async with front_end(db_url, workers.root) as a, front_end(db_url, workers.root) as b:
        worker = workers.start()
        await workers.registered(1)
        out = RecordingOutbox()
        grading = asyncio.create_task(
            a.coach.submit(ADA, "rate-limiter", probed.url(60, "long"), out)
        )
        await until(lambda: probed.hits["long"] >= 5)

        answer = await b.coach.cancel(ADA)  # through the other replica

        assert answer.title.startswith("Submission #") and "cancelled" in answer.title
        done = await asyncio.wait_for(grading, 10)
        assert done.status == "cancelled"
        assert showing(out, "cancelled")
        at_cancel = probed.hits["long"]
        await asyncio.sleep(1.0)  # a grade still running would probe ~20 times in this second
        assert probed.hits["long"] <= at_cancel + 1  # at most the probe in flight
        queue = b.coach.queue
        assert isinstance(queue, EngineQueue)
        jobs = await queue.engine.job_manager.list_jobs_async(queueing_lock=f"sub-{done.id}")
        assert [j.status for j in jobs] == ["aborted"]  # by the engine, on the worker

        next_one = await asyncio.wait_for(
            a.coach.submit(ADA, "rate-limiter", probed.url(0.5, "next"), RecordingOutbox()), 30
        )
        assert next_one.status == "done"  # the worker lives on and takes the next grade
        assert worker.poll() is None


async def test_a_store_blip_while_claiming_runs_the_job_again(
    db_url: str, workers: Workers, probed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claim's transaction fails on the store (a connection lost): the engine runs the
    same job again (``STORE_RETRY``) and the grade happens, once."""
    from sqlalchemy.exc import OperationalError

    from tests.scale.node import ProbeGrader

    async with front_end(db_url, workers.root) as front, front_end(db_url, workers.root) as w:
        w.coach.grader = ProbeGrader()  # type: ignore[assignment]
        queue = w.coach.queue
        assert isinstance(queue, EngineQueue)
        real, claims = queue._claim_for, []

        async def flaky(job_id: int) -> Submission | None:
            claims.append(job_id)
            if len(claims) == 1:
                raise OperationalError("SELECT …", {}, Exception("server closed the connection"))
            return await real(job_id)

        monkeypatch.setattr(queue, "_claim_for", flaky)
        working = asyncio.create_task(queue.work(concurrency=1))
        try:
            graded = await asyncio.wait_for(
                front.coach.submit(ADA, "rate-limiter", probed.url(1, "ada"), RecordingOutbox()),
                60,
            )
        finally:
            working.cancel()
            await asyncio.gather(working, return_exceptions=True)
        assert graded.status == "done"
        assert len(claims) == 2 and claims[0] == claims[1]  # the same job, run again
        assert probed.hits["ada"] >= 1 and len(probed.pids["ada"]) == 1
