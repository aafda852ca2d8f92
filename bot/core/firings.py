"""Each firing of a schedule runs once across every process over one store.

Every bot replica keeps its own in-memory APScheduler (APScheduler 3's guide: a job store must
never be shared between schedulers, https://apscheduler.readthedocs.io/en/3.x/userguide.html
#sharing-a-job-store-among-one-or-more-schedulers), so every replica fires every job. Before a
firing's side effect (a daily post, a contest announcement), a process *claims* it: it inserts
the row (job, fire time) of :class:`~bot.store.models.ScheduleFiring`, unique in the shared
database, and only the process whose insert went in makes it. The claim is a lease: the winner
marks it done after the side effect; a winner that failed releases it at once, and one that
died keeps it only until ``lease_until``, after which another process takes it over
(:meth:`Firings.expired` lists those, ``bot.scheduler.operations`` sweeps them). A firing is
tried ``max_attempts`` times at most.

Job names start with the platforms of the processes that make them (``slack/daily:3``), so a
process only ever takes over what it can post. Lease times are read from the ``clock`` of each
process: the hosts' clocks must agree to well under a lease (NTP).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from bot.core.clock import Clock, utcnow
from bot.store import Store
from bot.store.models import ScheduleFiring

log = logging.getLogger(__name__)

DEFAULT_LEASE = timedelta(minutes=5)
MAX_ATTEMPTS = 3
KEEP = timedelta(days=2)  # firings scheduled longer ago than this are pruned
INSERTS = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}  # with ON CONFLICT


class Firings:
    """Claims of schedule firings in ``store``, as the process ``owner`` (a fresh id)."""

    def __init__(
        self,
        store: Store,
        *,
        lease: timedelta = DEFAULT_LEASE,
        clock: Clock = utcnow,
        owner: str | None = None,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        if lease <= timedelta(0):
            raise ValueError(f"a firing's lease must be positive, not {lease}")
        self.store = store
        self.lease = lease
        self.clock = clock
        self.owner = owner or uuid.uuid4().hex
        self.max_attempts = max_attempts

    async def claim(self, job: str, at: datetime) -> bool:
        """True when this process is to make firing (``job``, ``at``): it inserted its row, or
        took over one that is unfinished and whose lease ended (or that it holds itself).
        False when another process made it, holds it, or it was tried ``max_attempts`` times."""
        now = self.clock()
        row = {
            "job": job,
            "fire_at": at,
            "owner": self.owner,
            "claimed_at": now,
            "lease_until": now + self.lease,
            "attempts": 1,
        }
        dialect = self.store.engine.dialect.name
        insert = INSERTS.get(dialect)
        if insert is None:
            raise ValueError(f"schedule claims need SQLite or PostgreSQL, not {dialect}")
        async with self.store.session() as s:
            stmt = insert(ScheduleFiring).values(row).on_conflict_do_nothing()
            if (await s.execute(stmt.returning(ScheduleFiring.id))).first() is not None:
                return True
            taken = await s.execute(
                update(ScheduleFiring)
                .where(
                    ScheduleFiring.job == job,
                    ScheduleFiring.fire_at == at,
                    ScheduleFiring.done_at.is_(None),
                    ScheduleFiring.attempts < self.max_attempts,
                    or_(ScheduleFiring.lease_until <= now, ScheduleFiring.owner == self.owner),
                )
                .values(
                    owner=self.owner,
                    claimed_at=now,
                    lease_until=now + self.lease,
                    attempts=ScheduleFiring.attempts + 1,
                )
            )
            won = taken.rowcount == 1  # type: ignore[attr-defined]
        if won:
            log.info("firing %s at %s taken over by %s", job, at, self.owner)
        return won

    async def done(self, job: str, at: datetime) -> None:
        """The firing's side effect is made: nobody makes it again."""
        async with self.store.session() as s:
            await s.execute(
                update(ScheduleFiring)
                .where(
                    ScheduleFiring.job == job,
                    ScheduleFiring.fire_at == at,
                    ScheduleFiring.owner == self.owner,
                )
                .values(done_at=self.clock())
            )

    async def release(self, job: str, at: datetime) -> None:
        """The claimer failed: the lease ends now, so the next attempt need not wait for it (a
        warning says when that was the last try)."""
        async with self.store.session() as s:
            tries = await s.scalar(
                update(ScheduleFiring)
                .where(
                    ScheduleFiring.job == job,
                    ScheduleFiring.fire_at == at,
                    ScheduleFiring.owner == self.owner,
                    ScheduleFiring.done_at.is_(None),
                )
                .values(lease_until=self.clock())
                .returning(ScheduleFiring.attempts)
            )
        if tries is not None and tries >= self.max_attempts:
            log.warning("firing %s at %s given up after %d tries", job, at, tries)

    async def close_idle(self, job: str, at: datetime) -> None:
        """Mark done a firing nobody holds: one whose retry found nothing left to make (the post
        was recorded, its grace passed, its contest was cancelled)."""
        now = self.clock()
        async with self.store.session() as s:
            await s.execute(
                update(ScheduleFiring)
                .where(
                    ScheduleFiring.job == job,
                    ScheduleFiring.fire_at == at,
                    ScheduleFiring.done_at.is_(None),
                    ScheduleFiring.lease_until <= now,
                )
                .values(done_at=now)
            )

    @asynccontextmanager
    async def once(self, job: str, at: datetime) -> AsyncIterator[bool]:
        """``async with firings.once(job, at) as mine: if mine: <side effect>`` — done when the
        block ends, released when it raises."""
        mine = await self.claim(job, at)
        try:
            yield mine
        except BaseException:
            if mine:
                await self.release(job, at)
            raise
        if mine:
            await self.done(job, at)

    async def expired(self, prefixes: list[str]) -> list[tuple[str, datetime]]:
        """Unfinished firings whose lease ended and that may be tried again, of jobs starting
        with one of ``prefixes``: (job, fire time), oldest first."""
        if not prefixes:
            return []
        now = self.clock()
        async with self.store.session() as s:
            rows = await s.execute(
                select(ScheduleFiring.job, ScheduleFiring.fire_at)
                .where(
                    ScheduleFiring.done_at.is_(None),
                    ScheduleFiring.lease_until <= now,
                    ScheduleFiring.attempts < self.max_attempts,
                    or_(*(ScheduleFiring.job.startswith(p, autoescape=True) for p in prefixes)),
                )
                .order_by(ScheduleFiring.fire_at)
            )
            return [(job, at) for job, at in rows.all()]

    async def prune(self, keep: timedelta = KEEP) -> int:
        """Forget firings scheduled more than ``keep`` ago (what they made is recorded where it
        matters: daily posts, contest columns); how many."""
        async with self.store.session() as s:
            result = await s.execute(
                delete(ScheduleFiring).where(ScheduleFiring.fire_at < self.clock() - keep)
            )
            return int(result.rowcount)  # type: ignore[attr-defined]
