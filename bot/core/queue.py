"""The grading queue: submissions wait in the store, a bounded number grade at once.

The store is the truth (``Submission.status``: queued → running → done | error | cancelled): one
submission per learner is queued or running at a time (a unique index), a place in the queue
is counted in the store, and at most ``limit`` wait (beyond: :class:`QueueFull`, with when to
try again). Learners who submitted in this process are *watchers*: their progress message shows
their place in the queue, then the grade's progress.

The order is fair across communities (a Discord guild, a Slack workspace; submissions made
outside any — the console, a DM — count as one more): each submission draws a turn when it is
added (:func:`next_turn`, start-time fair queueing) and :func:`fair_order` starts the lowest
turn first, so communities with work waiting take turns and one busy server cannot starve the
others. Both implementations claim by it and count places by
it, so a learner's place counts what will really start before them (a later submission of a
quieter community may still pass them: that is the share).

Two implementations of one interface, chosen by the store (:func:`make_queue`):

- :class:`GradingQueue` (SQLite, the embedded default): this process grades, a bounded number
  at once; a restart loses nothing: :meth:`GradingQueue.resume` re-queues what was running
  when the process stopped (up to ``max_attempts`` starts, then it is reported as interrupted).
- :class:`bot.core.jobs.EngineQueue` (PostgreSQL): grades are jobs of procrastinate, run by
  ``cruscible worker`` processes on any host; chat front ends (``cruscible run``) only queue,
  follow and publish.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.core.clock import Clock, utcnow
from bot.core.message import Message
from bot.core.outbox import Actor, Outbox
from bot.store import Store, Submission
from bot.store.models import ACTIVE

if TYPE_CHECKING:
    from bot.config import Settings

log = logging.getLogger(__name__)

INTERRUPTED = "interrupted by restarts {n} times; submit again"
DEFAULT_GRADE_S = 60.0  # the guess of a grade's duration before any grade finished
RECENT_GRADES = 20  # finished grades the "try at" estimate averages


def _turn() -> Any:
    return func.coalesce(Submission.turn, 0)


async def next_turn(s: AsyncSession, community_id: int | None) -> int:
    """The turn of a submission its community adds now (start-time fair queueing).

    ``V`` is the highest turn started so far (the queue's virtual time); a community takes the
    turn after its last one (queued, running or started; a cancel before the start does not
    count), and never less than ``V``. So a community with nothing waiting goes before every
    turn a busy one queued beyond ``V``, communities with work waiting take turns round-robin,
    and one submitting again each time its grade ends waits its turn as well. Two replicas
    adding at once may draw the same turn; the older submission goes first."""
    started = Submission.started_at.is_not(None)
    virtual = await s.scalar(select(func.max(_turn())).where(started))
    mine = (
        Submission.community_id.is_(None)
        if community_id is None
        else Submission.community_id == community_id
    )
    last = await s.scalar(
        select(func.max(_turn())).where(mine, started | Submission.status.in_(ACTIVE))
    )
    return max(int(virtual or 0), int(last) + 1 if last is not None else 0)


async def fair_order(s: AsyncSession) -> list[int]:
    """The queued submissions' ids in the order they start: by turn (:func:`next_turn`), the
    older first on a tie. Taking the first changes no other place; a grade ending changes
    none either; only a quieter community's new submission passes those queued."""
    return list(
        await s.scalars(
            select(Submission.id)
            .where(Submission.status == "queued")
            .order_by(_turn(), Submission.id)
        )
    )


class AlreadyQueued(Exception):
    """The learner already has a submission queued or grading."""

    def __init__(self, existing: Submission) -> None:
        super().__init__(f"submission #{existing.id} is {existing.status}")
        self.existing = existing


class QueueFull(Exception):
    """``waiting`` grades already wait (the queue's bound); ``retry_at`` (UTC) is when a place
    is expected to be free: the grades ahead at the recent mean duration, spread over the
    grades running now."""

    def __init__(self, waiting: int, retry_at: datetime) -> None:
        super().__init__(f"{waiting} grades are waiting; try at {retry_at:%H:%M} UTC")
        self.waiting = waiting
        self.retry_at = retry_at


class QueueStopped(Exception):
    """The bot stopped before the grade finished; it resumes at the next start."""


@dataclass
class Watcher:
    """The learner waiting on a submission in this process, and their progress message."""

    out: Outbox
    actor: Actor
    thread: str | None = None
    done: asyncio.Future[Submission] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    position: int | None = None
    _ref: asyncio.Future[str | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def attach(self, ref: str | None) -> None:
        """The progress message is posted (None: it could not be)."""
        if not self._ref.done():
            self._ref.set_result(ref)

    async def show(self, msg: Message) -> None:
        """Edit the progress message (once it exists)."""
        ref = await self._ref
        if ref is not None:
            await self.out.edit(ref, msg)

    def resolve(self, sub: Submission | None = None, error: BaseException | None = None) -> None:
        if self.done.done():
            return
        if error is not None:
            self.done.set_exception(error)
        else:
            self.done.set_result(sub)  # type: ignore[arg-type]


Execute = Callable[[Submission, Watcher | None], Awaitable[None]]
ShowPosition = Callable[[Submission, int], Message]
Settled = Callable[[Submission], Awaitable[None]]


class GradingQueue:
    def __init__(
        self,
        store: Store,
        *,
        concurrency: int,
        execute: Execute,
        show_position: ShowPosition,
        on_settled: Settled | None = None,
        clock: Clock = utcnow,
        max_attempts: int = 2,
        limit: int = 0,
    ) -> None:
        """``execute`` grades one claimed submission and records its outcome; ``on_settled``
        hears of every submission that left the queue (graded, failed or cancelled); ``limit``
        bounds the grades waiting (0: no bound)."""
        self.store = store
        self.limit = limit
        self.concurrency = max(1, concurrency)
        self.execute = execute
        self.show_position = show_position
        self.on_settled = on_settled
        self.clock = clock
        self.max_attempts = max_attempts
        self._watchers: dict[int, Watcher] = {}
        self._running: dict[int, asyncio.Task[None]] = {}
        self._cancelling: set[int] = set()
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(self.concurrency)
        self._dispatcher: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._announcing = asyncio.Lock()  # position edits in order

    # -- adding and watching ------------------------------------------------------------------
    async def add(self, sub: Submission, watcher: Watcher | None = None) -> Submission:
        """Queue ``sub``; raises :class:`AlreadyQueued` when its learner has one unfinished,
        :class:`QueueFull` when ``limit`` grades wait already."""
        await self._insert(sub, watcher)
        await self._enqueue(sub)
        return sub

    async def _enqueue(self, sub: Submission) -> None:
        """``sub`` is in the store, queued: have it graded (here: by this process); the places
        it passed (a quieter community's turn) are shown anew."""
        self.start()
        self._wake.set()
        self._spawn(self._announce_positions())

    async def _insert(self, sub: Submission, watcher: Watcher | None) -> None:
        sub.status = "queued"
        try:
            async with self.store.session() as s:
                existing = await self.active(sub.user_id, session=s)
                if existing is not None:
                    s.expunge(existing)  # readable after the rollback
                    raise AlreadyQueued(existing)
                await self._check_bound(s)
                sub.turn = await next_turn(s, sub.community_id)
                s.add(sub)
                await s.flush()  # the id; workers see the row only once committed
                if watcher is not None:
                    self._watchers[sub.id] = watcher
        except IntegrityError:  # a concurrent add won the one-per-learner index
            existing = await self.active(sub.user_id)
            if existing is None:
                raise
            raise AlreadyQueued(existing) from None

    async def _check_bound(self, s: AsyncSession) -> None:
        """Raise :class:`QueueFull` when ``limit`` grades wait (counted in the store, so over
        every replica; two replicas adding at the same instant may pass it by one each)."""
        if not self.limit:
            return
        waiting = int(
            await s.scalar(
                select(func.count()).select_from(Submission).where(Submission.status == "queued")
            )
            or 0
        )
        if waiting < self.limit:
            return
        running = await s.scalar(
            select(func.count()).select_from(Submission).where(Submission.status == "running")
        )
        recent = list(
            await s.execute(
                select(Submission.started_at, Submission.finished_at)
                .where(Submission.status == "done", Submission.started_at.is_not(None))
                .order_by(Submission.id.desc())
                .limit(RECENT_GRADES)
            )
        )
        spans = [(end - start).total_seconds() for start, end in recent if start and end]
        mean = sum(spans) / len(spans) if spans else DEFAULT_GRADE_S
        rounds = math.ceil((waiting - self.limit + 1) / max(1, int(running or 0)))
        raise QueueFull(waiting, self.clock() + timedelta(seconds=mean * rounds))

    def progressed(self, sub_id: int, phase: str, fraction: float) -> None:
        """A grade nobody waits on in this process reached ``phase`` (``fraction`` 0..1 of
        it); here nothing needs it (its watcher, if any, is told directly)."""

    def watcher(self, sub_id: int) -> Watcher | None:
        """The learner waiting on ``sub_id`` in this process, if any."""
        return self._watchers.get(sub_id)

    async def active(
        self, user_id: int, *, session: AsyncSession | None = None
    ) -> Submission | None:
        """The learner's queued or running submission, if any."""
        q = select(Submission).where(Submission.user_id == user_id, Submission.status.in_(ACTIVE))
        if session is not None:
            return await session.scalar(q)
        async with self.store.session() as s:
            return await s.scalar(q)

    async def position(self, sub_id: int) -> int | None:
        """1 for the next to start (in :func:`fair_order`); None once it is no longer waiting."""
        async with self.store.session() as s:
            order = await fair_order(s)
        return order.index(sub_id) + 1 if sub_id in order else None

    async def counts(self) -> dict[str, int]:
        async with self.store.session() as s:
            rows = await s.execute(
                select(Submission.status, func.count())
                .where(Submission.status.in_(ACTIVE))
                .group_by(Submission.status)
            )
            return {status: n for status, n in rows.all()}

    # -- cancelling --------------------------------------------------------------------------
    async def cancel(self, user_id: int) -> Submission | None:
        """Cancel the learner's queued or running submission; the cancelled one, or None."""
        sub = await self.active(user_id)
        if sub is None:
            return None
        async with self.store.session() as s:
            done = await s.execute(
                update(Submission)
                .where(Submission.id == sub.id, Submission.status == "queued")
                .values(status="cancelled", finished_at=self.clock())
            )
        if done.rowcount:  # type: ignore[attr-defined]
            await self._settle(sub.id)
            return await self._load(sub.id)
        task = self._running.get(sub.id)
        if task is not None:
            self._cancelling.add(sub.id)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        else:  # running in no task of ours (another process, or a stop in between)
            await self._mark(sub.id, "cancelled")
            await self._settle(sub.id)
        return await self._load(sub.id)

    # -- running -----------------------------------------------------------------------------
    def start(self) -> None:
        """Start taking submissions from the store (idempotent)."""
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = asyncio.get_running_loop().create_task(self._dispatch())

    async def resume(self) -> list[Submission]:
        """At start-up: re-queue what a stop or crash interrupted, then start.

        Returns the submissions given up on (interrupted ``max_attempts`` times), now errors.
        """
        async with self.store.session() as s:
            stale = Submission.status == "running"
            mine = Submission.id.not_in(list(self._running))
            given_up = list(
                await s.scalars(
                    select(Submission).where(stale, mine, Submission.attempts >= self.max_attempts)
                )
            )
            for sub in given_up:
                sub.status, sub.finished_at = "error", self.clock()
                sub.error = INTERRUPTED.format(n=sub.attempts)
            await s.execute(update(Submission).where(stale, mine).values(status="queued"))
        self.start()
        self._wake.set()
        return given_up

    async def stop(self) -> None:
        """Stop taking and grading; running grades stay ``running`` and resume at next start."""
        tasks = [t for t in (self._dispatcher, *self._running.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, *self._tasks, return_exceptions=True)
        self._dispatcher = None
        for watcher in self._watchers.values():
            watcher.resolve(error=QueueStopped())
        self._watchers.clear()

    async def idle(self) -> None:
        """Wait until nothing is queued or running (tests, benchmarks)."""
        while await self.counts() or self._running:  # noqa: ASYNC110 — the store is the truth
            await asyncio.sleep(0.02)

    async def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._slots.acquire()
            self._wake.clear()
            sub = await self._claim()
            if sub is None:
                self._slots.release()
                await self._wake.wait()
                continue
            task = loop.create_task(self._run(sub))
            self._running[sub.id] = task
            task.add_done_callback(lambda _t, sid=sub.id: self._release(sid))
            self._spawn(self._announce_positions())

    def _release(self, sub_id: int) -> None:
        self._running.pop(sub_id, None)
        self._slots.release()

    async def _claim(self) -> Submission | None:
        """The first queued submission of :func:`fair_order`, now ``running`` (atomically: one
        claimer wins)."""
        while True:
            async with self.store.session() as s:
                order = await fair_order(s)
                if not order:
                    return None
                sub_id = order[0]
                won = await s.execute(
                    update(Submission)
                    .where(Submission.id == sub_id, Submission.status == "queued")
                    .values(
                        status="running",
                        attempts=Submission.attempts + 1,
                        started_at=self.clock(),
                    )
                )
            if won.rowcount:  # type: ignore[attr-defined]
                return await self._load(sub_id)

    async def _run(self, sub: Submission) -> None:
        watcher = self._watchers.get(sub.id)
        try:
            await self.execute(sub, watcher)
        except asyncio.CancelledError:
            if sub.id not in self._cancelling:
                raise  # stopping: the row stays "running" and resumes at the next start
            self._cancelling.discard(sub.id)
            await self._mark(sub.id, "cancelled")
        except Exception as exc:
            log.exception("grading submission %d failed", sub.id)
            await self._mark(sub.id, "error", f"internal error: {type(exc).__name__}")
        await self._settle(sub.id)

    async def _settle(self, sub_id: int) -> None:
        """Hand the finished submission to its watcher; the queue moved: tell the others."""
        sub = await self._load(sub_id)
        watcher = self._watchers.pop(sub_id, None)
        if watcher is not None:
            watcher.resolve(sub)
        self._spawn(self._announce_positions())
        if self.on_settled is not None:
            try:
                await self.on_settled(sub)
            except Exception:
                log.exception("after submission %d", sub_id)

    async def _announce_positions(self) -> None:
        async with self._announcing:
            await self._announce()

    async def _announce(self) -> None:
        waiting = {i: w for i, w in list(self._watchers.items()) if i not in self._running}
        if not waiting:
            return
        async with self.store.session() as s:
            order = await fair_order(s)
            subs = {
                x.id: x for x in await s.scalars(select(Submission).where(Submission.id.in_(order)))
            }
        for n, sub in enumerate((subs[i] for i in order if i in subs), 1):
            watcher = waiting.get(sub.id)
            if watcher is not None and watcher.position != n:
                watcher.position = n
                try:
                    await watcher.show(self.show_position(sub, n))
                except Exception:
                    log.warning("could not show queue position of #%d", sub.id, exc_info=True)

    async def _mark(self, sub_id: int, status: str, error: str | None = None) -> None:
        async with self.store.session() as s:
            sub = await s.get_one(Submission, sub_id)
            sub.status, sub.finished_at = status, self.clock()
            if error is not None:
                sub.error = error

    async def _load(self, sub_id: int) -> Submission:
        async with self.store.session() as s:
            return await s.get_one(Submission, sub_id)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def make_queue(
    settings: Settings, store: Store, *, engine: dict[str, Any], **kwargs: Any
) -> GradingQueue:
    """The queue the store calls for: :class:`bot.core.jobs.EngineQueue` (procrastinate) over
    PostgreSQL, with ``engine`` (its own arguments: ``publish``, ``interrupted``,
    ``platforms``), else this process's :class:`GradingQueue`. ``kwargs`` are
    :class:`GradingQueue`'s."""
    if settings.uses_job_engine:
        from bot.core.jobs import EngineQueue

        return EngineQueue(store, settings=settings, **engine, **kwargs)
    return GradingQueue(store, **kwargs)
