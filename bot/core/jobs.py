"""The grading queue on a job engine: procrastinate over the PostgreSQL store.

Why procrastinate (https://procrastinate.readthedocs.io/): its jobs live in the database the
store already is (no extra server), a worker claims one with ``SELECT … FOR UPDATE SKIP
LOCKED`` (each job runs on one worker at a time), workers send heartbeats and the jobs of a
silent one can be listed and retried, a job *lock* runs jobs sharing it one at a time, a
*queueing lock* keeps one waiting, and an abort request cancels an asyncio job on whichever
worker runs it (LISTEN/NOTIFY, polled as a fallback).

Roles over one database (README, "At scale"):

- chat front ends (``cruscible run``, any number) add submissions (the store is the truth:
  status, one per learner, positions, the bound — :class:`~bot.core.queue.GradingQueue`) and
  defer a ``grade`` job; they follow their watchers' submissions in the store every
  ``FOLLOW_EVERY_S`` (places true over every replica, the grade's phase as the worker records
  it, a restart, the end) and take the jobs of their platform's queue (``front-<platform>``):
  ``settle`` publishes a finished grade (through the learner's interaction when they wait in
  that process, else the platform's channels) and tells what a settled submission changes;
  ``restarted`` tells a learner nobody follows that their grade restarted.
- workers (``cruscible worker``, any number, any host) take ``grade`` jobs (queue
  ``grading``), ``concurrency`` at once. A ``grade`` job is a slot, not a fixed submission:
  one is deferred per submission queued, and the job, once a worker runs it, *claims* the next
  submission of the fair order across communities (:func:`bot.core.queue.fair_order`) in the
  store, under one advisory transaction lock (``CLAIM_LOCK``), and records itself on it
  (``Submission.job_id``). Why a claim step: the engine takes jobs by the priority fixed at
  defer time, then age, which cannot let a community arriving later pass a busy one's backlog;
  per-community queues would need each worker to rotate its queue list. The lock serializes
  claims over every replica and host (each is one short transaction), and the places front ends
  show are counted by the same order. One grade per learner at a time is the store's unique
  index (one queued or running submission per learner).
- every process retries the jobs of processes silent for ``worker_stalled_after`` (a kill -9,
  a lost host): the submission stays ``running``; the next start counts an attempt and the
  learner is told the grade restarted; after ``max_attempts`` starts it is given up (an error
  the learner is told). Delivery is at least once: a worker silent but alive (a frozen host)
  may finish a grade another restarted; the publication is one row per submission, so the
  result is published once.

Progress messages: the front end the learner submitted through holds their progress message (a
private reply to their command) and records itself on the submission (``progress_holder``: its
registration in the engine's worker table, ``procrastinate_workers``, whose heartbeat it sends
every ``worker_heartbeat``); it clears that once the message shows the end. A front end gone
(kill -9, a lost host, a stop) leaves it set and its heartbeat stale: once the grade has ended,
another front end of that platform takes the message over (one wins, by a conditional update)
and finishes it. Another replica cannot edit that reply (``PROGRESS_ELSEWHERE``), so it
records why (``progress_note``) and tells the learner the outcome privately by the route
publication uses for a learner nobody waits on (a DM, :meth:`bot.core.coach.Coach` ``tell``);
the score card and report are published by the ``settle`` job as ever.

A learner's cancel marks a waiting submission cancelled, or asks the engine to abort the
running job: the worker cancels its task (the grade stops where it runs) and records it.
A worker stopped by SIGTERM gives its grades back (queued again, the attempt not counted).

Environments are made, torn down and reaped by workers too (:mod:`bot.core.envjobs`, a lane
of their own); every role reaches them through the backend: workers and front ends on one host
sharing its data directory (``local`` backend), or any host with the ``docker`` backend on a
shared engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from procrastinate import App, JobContext, PsycopgConnector, RetryStrategy
from procrastinate.exceptions import AlreadyEnqueued
from procrastinate.job_context import AbortReason
from sqlalchemy import exc as sa_exc
from sqlalchemy import select, text, update

from bot.config import Settings
from bot.core import views
from bot.core.envjobs import ENVIRONMENTS, LANE_CONCURRENCY, EnvironmentJobs
from bot.core.message import Message
from bot.core.queue import INTERRUPTED, GradingQueue, QueueStopped, Watcher, fair_order
from bot.store import Store, Submission, User
from bot.store.models import ACTIVE

log = logging.getLogger(__name__)

GRADING = "grading"  # the queue workers take
FOLLOW_EVERY_S = 0.5  # a front end reads its watchers' submissions this often
CANCEL_WITHIN_S = 30.0  # a cancel waits this long for the worker to stop the grade
SHUTDOWN_GRACE_S = 5.0  # a stopping worker lets grades end this long, then gives them back
# (at most half the silence that marks a worker dead: a stopping worker sends no heartbeat)
SCHEMA_LOCK = 7_240_113  # advisory lock: one process applies the engine's schema
CLAIM_LOCK = 7_240_114  # advisory transaction lock: one claim step at a time, over every host

# A job that failed on the store (a connection lost, a failover) runs again: after 2, 4, 8
# and 16 s. The jobs are idempotent over the store: a grade job claims the submission it
# claimed before (``_claim_for``), a settle publishes once (one publication row), a provision
# takes its request once.
STORE_RETRY = RetryStrategy(
    max_attempts=4,
    exponential_wait=2,
    retry_exceptions={sa_exc.OperationalError, sa_exc.InterfaceError, psycopg.OperationalError},
)

PROGRESS_ELSEWHERE = (
    "the progress message was the private reply of a front end that stopped; no other replica "
    "can edit it (Discord: an interaction's response is edited only with its token, held by "
    "the process that received it — https://discord.com/developers/docs/interactions/"
    "receiving-and-responding#edit-original-interaction-response; Slack: an ephemeral message "
    "cannot be updated by chat.update — https://api.slack.com/messaging/managing#ephemeral; "
    "the console: the terminal's own process), so the outcome was sent privately instead"
)

Publish = Callable[[Submission], Awaitable[None]]
Interrupted = Callable[[list[Submission]], Awaitable[None]]
Tell = Callable[[Submission, Message], Awaitable[None]]


def front_queue(platform: str) -> str:
    """The queue of the front ends that serve ``platform`` (they hold its channels)."""
    return f"front-{platform}"


def conninfo(db_url: str) -> str:
    """libpq's URL of the store's SQLAlchemy URL (``postgresql+psycopg://…`` → ``postgresql://…``)."""
    scheme, sep, rest = db_url.partition("://")
    return f"{scheme.split('+', 1)[0]}{sep}{rest}"


class EngineQueue(GradingQueue):
    """The grading queue of a PostgreSQL store: grades are procrastinate jobs (see the module).

    ``settings`` gives the store's URL, the heartbeat and how long a silent worker is trusted.
    A front end's ``settle`` job calls ``publish`` with a finished submission (it publishes
    from the store), ``interrupted`` with one given up after ``max_attempts`` starts (it tells
    the learner); ``tell`` sends a learner a message privately (a restarted grade nobody waits
    on in this process); ``platforms`` names the platforms this process serves (their ``settle`` jobs
    are its own). The other arguments are :class:`GradingQueue`'s."""

    def __init__(
        self,
        store: Store,
        *,
        settings: Settings,
        publish: Publish | None = None,
        interrupted: Interrupted | None = None,
        tell: Tell | None = None,
        platforms: Callable[[], set[str]] = set,
        environments: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(store, **kwargs)
        self.interrupted = interrupted
        self.tell = tell
        self.platforms = platforms
        self.dsn = conninfo(settings.db_url)
        self.heartbeat_s = settings.worker_heartbeat.total_seconds()
        self.stalled_after_s = settings.worker_stalled_after.total_seconds()
        self.grace_s = min(SHUTDOWN_GRACE_S, self.stalled_after_s / 2)
        self.publish = publish
        self.engine = App(connector=PsycopgConnector(conninfo=self.dsn, min_size=1, max_size=8))
        task = self.engine.task
        self._grade_task = task(name="grade", pass_context=True, queue=GRADING, retry=STORE_RETRY)(
            self._grade_job
        )
        self._settle_task = task(name="settle", retry=STORE_RETRY)(self._settle_job)
        self._restarted_task = task(name="restarted", retry=STORE_RETRY)(self._restarted_job)
        # provision, teardown and reap jobs (``environments``: EnvironmentJobs' callbacks)
        self.environments = (
            EnvironmentJobs(self.engine, store, clock=self.clock, retry=STORE_RETRY, **environments)
            if environments is not None
            else None
        )
        self._opened = False
        self._opening = asyncio.Lock()
        self.holder: int | None = None  # this front end in the engine's worker table
        self._side: list[asyncio.Task[None]] = []  # follower, front worker, rescuer
        # what a watcher was last shown: (status, attempts, phase, phase_done)
        self._seen: dict[int, tuple[str, int, str | None, float | None]] = {}

    # -- the engine ---------------------------------------------------------------------------
    async def open(self) -> None:
        """Connect to the engine; apply its schema if the database has none (once, under an
        advisory lock, whatever the number of processes starting)."""
        async with self._opening:
            if self._opened:
                return
            async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as conn:
                await conn.execute("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK,))
                try:
                    cur = await conn.execute("SELECT to_regclass('procrastinate_jobs')")
                    row = await cur.fetchone()
                    await self.engine.open_async()
                    self._opened = True
                    if row is None or row[0] is None:
                        await self.engine.schema_manager.apply_schema_async()
                        log.info("job engine schema applied")
                finally:
                    await conn.execute("SELECT pg_advisory_unlock(%s)", (SCHEMA_LOCK,))

    async def _close(self) -> None:
        if self._opened:
            self._opened = False
            await self.engine.close_async()

    def _side_task(self, coro: Awaitable[None], name: str) -> None:
        self._side.append(asyncio.ensure_future(coro))
        self._side[-1].set_name(name)

    # -- a front end ----------------------------------------------------------------------------
    async def _enqueue(self, sub: Submission) -> None:
        """Defer the submission's ``grade`` job; if the engine refuses, the submission is an
        error (nothing waits for a job that does not exist) and the refusal is raised."""
        try:
            await self.open()
            await self._grade_task.configure(queueing_lock=f"sub-{sub.id}").defer_async(
                sub_id=sub.id
            )
        except BaseException:
            await self._mark(sub.id, "error", "the grading queue could not take it; submit again")
            self._watchers.pop(sub.id, None)
            raise
        if sub.id in self._watchers:
            await self._hold(sub.id)
        self.start()

    async def _hold(self, sub_id: int) -> None:
        """Record this front end as the holder of the submission's progress message
        (registered in the engine's worker table at its first one, its heartbeat sent from
        then on: see the module). Best effort: unrecorded, nobody takes the message over."""
        try:
            if self.holder is None:
                self.holder = await self.engine.job_manager.register_worker()
                self._side_task(self._beat(), "beat")
            async with self.store.session() as s:
                await s.execute(
                    update(Submission)
                    .where(Submission.id == sub_id)
                    .values(progress_holder=str(self.holder))
                )
        except Exception:
            log.warning("progress holder of submission %d not recorded", sub_id, exc_info=True)

    async def _beat(self) -> None:
        """Every heartbeat: this front end (holding progress messages) is alive."""
        while True:
            await asyncio.sleep(self.heartbeat_s)
            if self.holder is None:
                continue
            try:
                await self.engine.job_manager.update_heartbeat(self.holder)
            except Exception:
                log.warning("front end heartbeat not sent", exc_info=True)

    async def _release_progress(self, sub_id: int) -> None:
        """This front end showed the end in the progress message: nobody needs to take it over."""
        try:
            async with self.store.session() as s:
                await s.execute(
                    update(Submission)
                    .where(Submission.id == sub_id, Submission.progress_holder == str(self.holder))
                    .values(progress_holder=None)
                )
        except Exception:
            log.warning("progress of submission %d not released", sub_id, exc_info=True)

    async def _settle(self, sub_id: int) -> None:
        """As :meth:`GradingQueue._settle`; a watcher of this process resolved here ends with
        its progress message in this front end's hands (nobody takes it over)."""
        if sub_id in self._watchers:
            await self._release_progress(sub_id)
        await super()._settle(sub_id)

    async def _take_over_progress(self) -> None:
        """Finish the progress messages of finished grades whose holder is gone (its heartbeat
        older than ``worker_stalled_after``, or its row pruned) for the learners of the
        platforms this front end serves: each is taken by one front end (a conditional
        update), its reason recorded, and the outcome told privately."""
        platforms = self.platforms()
        if not platforms or self.tell is None:
            return
        async with self.store.session() as s:
            orphans = list(
                await s.scalars(
                    select(Submission)
                    .join(User, User.id == Submission.user_id)
                    .where(
                        Submission.progress_holder.is_not(None),
                        Submission.status.not_in(ACTIVE),
                        User.platform.in_(sorted(platforms)),
                    )
                )
            )
            if not orphans:
                return
            alive = {
                str(row[0])
                for row in await s.execute(
                    text(
                        "SELECT id FROM procrastinate_workers WHERE last_heartbeat > "
                        "now() - make_interval(secs => :secs)"
                    ),
                    {"secs": self.stalled_after_s},
                )
            }
        for sub in orphans:
            if sub.progress_holder in alive:
                continue  # its holder lives: it finishes the message itself
            async with self.store.session() as s:
                won = await s.execute(
                    update(Submission)
                    .where(
                        Submission.id == sub.id,
                        Submission.progress_holder == sub.progress_holder,
                    )
                    .values(progress_holder=None, progress_note=PROGRESS_ELSEWHERE)
                )
            if not won.rowcount:  # type: ignore[attr-defined]
                continue  # another front end took it
            log.info("progress of submission %d finished here: its front end is gone", sub.id)
            try:
                await self.tell(sub, self._outcome(sub))
            except Exception:
                log.warning("outcome of submission %d not told", sub.id, exc_info=True)

    @staticmethod
    def _outcome(sub: Submission) -> Message:
        """The final state a progress message would have shown."""
        if sub.status == "done":
            return views.grading_progress(sub.challenge, "done", 1.0)
        if sub.status == "cancelled":
            return views.cancelled(sub.challenge, sub.id)
        return Message(
            title=f"Submission #{sub.id} was not graded",
            body=f"could not grade {sub.url}: {sub.error or sub.status}",
        )

    def start(self) -> None:
        """Follow this process's watchers (idempotent)."""
        if not any(t.get_name() == "follow" and not t.done() for t in self._side):
            self._side_task(self._follow(), "follow")

    async def resume(self) -> list[Submission]:
        """A front end starts: follow watchers, take the ``settle`` jobs of the platforms this
        process serves, retry the jobs of silent processes. Returns [] (a grade given up on is
        a worker's finding; its ``settle`` job tells the learner)."""
        await self.open()
        self.start()
        platforms = self.platforms()
        if platforms:
            self._side_task(
                self.engine.run_worker_async(
                    queues=[front_queue(p) for p in sorted(platforms)],
                    name="front",
                    concurrency=4,
                    install_signal_handlers=False,
                    update_heartbeat_interval=self.heartbeat_s,
                    stalled_worker_timeout=self.stalled_after_s,
                    shutdown_graceful_timeout=self.grace_s,
                    delete_jobs="successful",  # the store keeps the outcome
                ),
                "front",
            )
        self._side_task(self._rescue(), "rescue")
        return []

    async def stop(self) -> None:
        """Stop following and taking jobs; running grades go on in the workers."""
        for task in self._side:
            task.cancel()
        await asyncio.gather(*self._side, *self._tasks, return_exceptions=True)
        self._side.clear()
        for watcher in self._watchers.values():
            watcher.resolve(error=QueueStopped())
        self._watchers.clear()
        await self._close()

    async def idle(self) -> None:
        """Wait until nothing is queued or running (tests, benchmarks)."""
        while await self.counts():  # noqa: ASYNC110 — the store is the truth
            await asyncio.sleep(0.05)

    async def cancel(self, user_id: int) -> Submission | None:
        """Cancel the learner's queued or running submission, wherever it runs; the cancelled
        (or, if it finished first, finished) one, or None."""
        sub = await self.active(user_id)
        if sub is None:
            return None
        await self.open()
        async with self.store.session() as s:
            done = await s.execute(
                update(Submission)
                .where(Submission.id == sub.id, Submission.status == "queued")
                .values(status="cancelled", finished_at=self.clock())
            )
        jobs = await self.engine.job_manager.list_jobs_async(queueing_lock=f"sub-{sub.id}")
        if done.rowcount:  # type: ignore[attr-defined]
            for job in jobs:  # a waiting job ends at once; a started one finds it cancelled
                if job.id is not None and job.status == "todo":
                    await self.engine.job_manager.cancel_job_by_id_async(job.id)
            await self._settle(sub.id)
            return await self._load(sub.id)
        grading = await self._load(sub.id)  # the job that claimed it, whichever it was
        doing = []
        if grading.job_id is not None:
            doing = [
                j
                for j in await self.engine.job_manager.list_jobs_async(id=grading.job_id)
                if j.status == "doing"
            ]
        for job in doing:
            assert job.id is not None
            await self.engine.job_manager.cancel_job_by_id_async(job.id, abort=True)
        if doing:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CANCEL_WITHIN_S):
                    while (await self._load(sub.id)).status == "running":  # noqa: ASYNC110
                        await asyncio.sleep(0.1)
        current = await self._load(sub.id)
        if current.status in ACTIVE:  # no live job grades it (its worker died): cancelled here
            await self._mark(sub.id, "cancelled")
            await self._settle(sub.id)
        return await self._load(sub.id)

    async def _follow(self) -> None:
        """Show each watcher its place (counted over every replica), its grade's start and any
        restart, and resolve it when its submission is finished."""
        while True:
            await asyncio.sleep(FOLLOW_EVERY_S)
            if not self._watchers:
                continue
            try:
                await self._follow_once()
            except Exception:  # the store or a platform: the next round tries again
                log.warning("following submissions failed", exc_info=True)

    async def _follow_once(self) -> None:
        ids = list(self._watchers)
        async with self.store.session() as s:
            subs = {
                x.id: x for x in await s.scalars(select(Submission).where(Submission.id.in_(ids)))
            }
            queued = await fair_order(s)
        places = {sid: n for n, sid in enumerate(queued, 1)}
        for sid in ids:
            watcher, sub = self._watchers.get(sid), subs.get(sid)
            if watcher is None or sub is None:
                continue
            seen = self._seen.get(sid)
            if sub.status == "queued":
                n = places.get(sid)
                if n is not None and watcher.position != n:
                    watcher.position = n
                    await self._say(watcher, self.show_position(sub, n))
            elif sub.status == "running":
                step = (sub.phase, sub.phase_done)
                if seen is not None and seen[0] == "running" and seen[1] < sub.attempts:
                    await self._say(watcher, views.restarted(sub, self.max_attempts))
                elif step[0] is not None and (seen is None or seen[2:] != step):
                    await self._say(
                        watcher,
                        views.grading_progress(sub.challenge, step[0], step[1] or 0.0),
                    )
                elif seen is None or seen[0] != "running":
                    await self._say(
                        watcher, views.grading_progress(sub.challenge, "started on a worker", 0.0)
                    )
            else:
                if sub.status == "done":
                    await self._say(watcher, views.grading_progress(sub.challenge, "done", 1.0))
                await self._release_progress(sid)  # the coach shows a cancel or an error
                self._watchers.pop(sid, None)
                self._seen.pop(sid, None)
                watcher.resolve(sub)
                continue
            self._seen[sid] = (sub.status, sub.attempts, sub.phase, sub.phase_done)

    @staticmethod
    async def _say(watcher: Watcher, msg: Any) -> None:
        try:
            await watcher.show(msg)
        except Exception as exc:  # noqa: BLE001 — progress is best effort
            log.warning("progress not shown: %s", getattr(exc, "reason", exc))

    def progressed(self, sub_id: int, phase: str, fraction: float) -> None:
        """A worker's grade reached ``phase``: recorded in the store (the caller throttles),
        where the learner's front end reads it."""
        self._spawn(self._record_progress(sub_id, phase, fraction))

    async def _record_progress(self, sub_id: int, phase: str, fraction: float) -> None:
        try:
            async with self.store.session() as s:
                await s.execute(
                    update(Submission)
                    .where(Submission.id == sub_id, Submission.status == "running")
                    .values(phase=phase[:32], phase_done=fraction)
                )
        except Exception:  # progress is best effort; the grade goes on
            log.warning("progress of submission %d not recorded", sub_id, exc_info=True)

    async def _restarted_job(self, sub_id: int) -> None:
        """A front end's job: tell the learner privately that their grade restarted, unless
        they wait in this process (their progress message says so)."""
        if sub_id in self._watchers or self.tell is None:
            return
        sub = await self._load(sub_id)
        if sub.status == "running":
            await self.tell(sub, views.restarted(sub, self.max_attempts))

    async def _settle_job(self, sub_id: int) -> None:
        """A front end's job: publish a finished grade, then what settling changes (boards,
        contests, an archive removed) — :meth:`GradingQueue._settle`."""
        sub = await self._load(sub_id)
        if sub.status == "done" and self.publish is not None:
            await self.publish(sub)
        elif (
            sub.status == "error"
            and sub.error == INTERRUPTED.format(n=sub.attempts)
            and self.interrupted is not None
        ):
            await self.interrupted([sub])
        await self._settle(sub_id)

    # -- a worker -----------------------------------------------------------------------------
    async def work(self, *, concurrency: int | None = None) -> None:
        """Take ``grade`` jobs until cancelled or sent SIGTERM or SIGINT (then returns: running
        grades get ``SHUTDOWN_GRACE_S`` — at most half ``worker_stalled_after`` — to end, then
        go back to the queue)."""
        await self.open()
        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stopping.set)
        rescuer = asyncio.ensure_future(self._rescue())
        lanes = [(GRADING, "grader", concurrency or self.concurrency)]
        if self.environments is not None:  # a lane of its own: a Start never waits for grades
            lanes.append((ENVIRONMENTS, "environments", LANE_CONCURRENCY))
        workers = [
            asyncio.ensure_future(
                self.engine.run_worker_async(
                    queues=[queue],
                    name=name,
                    concurrency=n,
                    install_signal_handlers=False,
                    update_heartbeat_interval=self.heartbeat_s,
                    stalled_worker_timeout=self.stalled_after_s,
                    shutdown_graceful_timeout=self.grace_s,
                    delete_jobs="successful",  # the store keeps the outcome
                    abort_job_polling_interval=max(0.5, self.heartbeat_s),
                )
            )
            for queue, name, n in lanes
        ]
        stop = asyncio.ensure_future(stopping.wait())
        try:
            await asyncio.wait({*workers, stop}, return_when=asyncio.FIRST_COMPLETED)
            for worker in workers:
                if worker.done():
                    worker.result()  # the engine's failure, raised
        finally:
            for task in (stop, *workers, rescuer):
                task.cancel()
            await asyncio.gather(stop, *workers, rescuer, return_exceptions=True)
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
            await self._close()

    async def _rescue(self) -> None:
        """Every heartbeat: finish the progress messages of front ends gone; retry the jobs of
        processes silent for ``stalled_after_s`` (two rescuers racing over one job: the engine
        retries it once, the other is refused)."""
        manager = self.engine.job_manager
        while True:
            await asyncio.sleep(self.heartbeat_s)
            try:
                await self._take_over_progress()
            except Exception:
                log.warning("could not take over progress messages", exc_info=True)
            try:
                stalled = await manager.get_stalled_jobs(
                    seconds_since_heartbeat=self.stalled_after_s
                )
            except Exception:
                log.warning("could not list stalled jobs", exc_info=True)
                continue
            for job in stalled:
                try:
                    await manager.retry_job(job)
                    log.warning(
                        "job %s (%s) restarted: its worker went silent", job.id, job.call_string
                    )
                except Exception:  # another process retried it first
                    log.debug("job %s not retried here", job.id, exc_info=True)

    async def _grade_job(self, context: JobContext, sub_id: int) -> None:
        """A worker's job: claim a submission (an attempt; ``sub_id``, the one it was deferred
        for, only names the job), grade it, record it; then a ``settle`` job for the front ends
        of its learner's platform."""
        job_id = context.job.id
        assert job_id is not None
        sub = await self._claim_for(job_id)
        if sub is None:  # nothing queued (cancelled, or claimed by another job)
            return
        sub_id = sub.id
        if sub.status == "done":  # its worker died after recording it, before settling it
            await self._defer_settle(sub_id)
            return
        if sub.status == "running":
            if sub.attempts > 1:  # an earlier start's worker went silent
                await self._defer_front(self._restarted_task, sub_id, f"restarted-{sub_id}")
            try:
                await self.execute(sub, None)
            except asyncio.CancelledError:
                # The cancel stands whatever the store says: a store error here must not turn
                # it into a failure that STORE_RETRY would run again (a cancelled grade re-run).
                try:
                    if context.abort_reason() is AbortReason.USER_REQUEST:
                        await self._mark(sub_id, "cancelled")
                        await self._defer_settle(sub_id)
                    else:  # this worker stops: another takes the grade
                        await self._give_back(sub_id, sub.attempts)
                except Exception:
                    log.warning("submission %d: recording its cancel failed", sub_id, exc_info=True)
                raise
            except Exception as exc:
                log.exception("grading submission %d failed", sub_id)
                if (await self._load(sub_id)).status == "running":  # else another start won
                    await self._mark(sub_id, "error", f"internal error: {type(exc).__name__}")
        await self._defer_settle(sub_id)

    async def _claim_for(self, job_id: int) -> Submission | None:
        """The submission job ``job_id`` grades, started (an attempt counted): the one it
        claimed before if the engine retried it (its worker went silent: after
        ``max_attempts`` starts it is given up, an error), else the first of the fair order,
        claimed under ``CLAIM_LOCK``. A submission it claimed that is done is returned as is;
        None when there is nothing to grade."""
        async with self.store.session() as s:
            await s.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CLAIM_LOCK})
            sub = await s.scalar(
                select(Submission)
                .where(Submission.job_id == job_id, Submission.status.in_((*ACTIVE, "done")))
                .with_for_update()
            )
            if sub is None:
                order = await fair_order(s)
                if not order:
                    return None
                sub = await s.get_one(Submission, order[0], with_for_update=True)
                sub.job_id = job_id
            elif sub.status == "done":
                return sub
            now = self.clock()
            if sub.status == "running" and sub.attempts >= self.max_attempts:
                sub.status, sub.finished_at = "error", now
                sub.error = INTERRUPTED.format(n=sub.attempts)
                return sub
            sub.status, sub.started_at = "running", now
            sub.phase = sub.phase_done = None
            sub.attempts += 1
            return sub

    async def _give_back(self, sub_id: int, attempt: int) -> None:
        """Queue the submission again (this start, ``attempt``, not counted) with a fresh job;
        nothing if another start took it over meanwhile."""
        async with self.store.session() as s:
            sub = await s.get(Submission, sub_id, with_for_update=True)
            if sub is None or sub.status != "running" or sub.attempts != attempt:
                return
            sub.status, sub.attempts = "queued", max(0, sub.attempts - 1)
            sub.job_id = None
        # a slot for it (no queueing lock: the job first deferred for it may still wait)
        await self._grade_task.defer_async(sub_id=sub_id)

    async def _defer_settle(self, sub_id: int) -> None:
        await self._defer_front(self._settle_task, sub_id, f"settle-{sub_id}")

    async def _defer_front(self, task: Any, sub_id: int, lock: str) -> None:
        """Defer ``task`` for the front ends of the submission's learner's platform."""
        async with self.store.session() as s:
            sub = await s.get_one(Submission, sub_id)
            user = await s.get_one(User, sub.user_id)
        with contextlib.suppress(AlreadyEnqueued):
            await task.configure(
                queue=front_queue(user.platform), lock=lock, queueing_lock=lock
            ).defer_async(sub_id=sub_id)
