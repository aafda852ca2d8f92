"""Community operations of a running bot: the scheduler and the grading queue.

Where jobs live depends on the store:

- SQLite (one process, the embedded default): APScheduler's SQLAlchemy job store, in a SQLite
  file of its own beside the store's (``Settings.scheduler_url``: the job store of APScheduler 3
  is synchronous).
- PostgreSQL (any number of replicas): each replica's own in-memory job store. APScheduler 3
  must never share a job store between schedulers
  (https://apscheduler.readthedocs.io/en/3.x/userguide.html#sharing-a-job-store-among-one-or-more-schedulers),
  so every replica fires every job, and each firing's side effect is claimed in the store
  first (``bot.core.firings``): one replica makes it. What a downtime missed comes from the
  start-up catch-up below, not from stored jobs.

A claimed firing whose claimer died is made by another replica once its lease
(``CRUSCIBLE_SCHEDULE_LEASE``) has passed: every replica sweeps expired claims every half lease
(at most every minute). At start-up jobs are planned again from the store:

- ``daily:<community>`` — a cron job at the community's local post time, in its timezone. An
  unchanged job is kept as stored, so one missed during downtime runs once on return (coalesce,
  within ``daily_grace``); a changed channel, time or timezone replaces it at once. A catch-up
  at start-up covers a post the crash interrupted (APScheduler had already moved the job on);
  :class:`~bot.core.daily.DailyPoster` posts nothing twice.
- ``contest:<id>:<step>`` — one date job per announcement still to make, overdue ones now.
- ``environments`` — the reaper and the expiry warnings, every ``reap_every``.
- ``publications`` — results a platform refused for a while, published again when due
  (every ``PUBLISH_EVERY_S`` seconds; each publication keeps its own backoff in the store).
  Each tick is claimed like a post (ticks are aligned to the epoch, so every replica's tick
  has the same time): replicas serving the same platforms retry a publication once.
- ``firings`` — the sweep of expired claims; with in-memory jobs it also plans again from the
  store, so a contest created or a post time changed through another replica is scheduled on
  this one within a sweep.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from apscheduler.jobstores.base import BaseJobStore, JobLookupError
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from bot.core.clock import Clock, utcnow
from bot.core.coach import Coach
from bot.core.daily import DailyPoster, post_clock
from bot.core.envwatch import EnvWatch
from bot.scheduler import jobs
from bot.store import Community, Contest

log = logging.getLogger(__name__)

PUBLISH_EVERY_S = 30
SWEEP_AT_MOST_EVERY_S = 60.0
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # periodic ticks are aligned to it across replicas
DONE_COLUMN = {"open": "opened_at", "remind": "reminded_at", "close": "closed_at"}


def daily_trigger(community: Community) -> CronTrigger:
    hour, minute = post_clock(community)
    return CronTrigger(hour=hour, minute=minute, timezone=community.timezone)


def shares_job_store(db_url: str) -> bool:
    """Jobs persist in the store's own database only with SQLite (one process)."""
    return db_url.split(":", 1)[0].split("+", 1)[0] == "sqlite"


def tick_of(now: datetime, every_s: float) -> datetime:
    """The epoch-aligned tick at or before ``now`` of a job run every ``every_s`` seconds: the
    same on every replica, whenever within the tick its scheduler woke."""
    ticks = int((now - EPOCH).total_seconds() // every_s)
    return EPOCH + timedelta(seconds=ticks * every_s)


class Operations:
    def __init__(self, coach: Coach, *, clock: Clock = utcnow) -> None:
        settings = coach.settings
        self.coach = coach
        self.clock = clock
        self.firings = coach.firings
        self.persistent = shares_job_store(settings.db_url)
        # the key by which stored jobs find this object: the database for stored jobs (they
        # outlive the process), this process's claims otherwise
        self.key = settings.scheduler_url if self.persistent else f"replica:{self.firings.owner}"
        lease_s = settings.schedule_lease.total_seconds()
        self.sweep_every_s = max(1.0, min(SWEEP_AT_MOST_EVERY_S, lease_s / 2))
        self.daily = DailyPoster(
            coach.communities,
            coach.catalog,
            coach.channels,
            grace=settings.daily_grace,
            clock=clock,
            firings=self.firings,
        )
        self.envs = EnvWatch(
            coach.store,
            coach.provisioner,
            coach.channels,
            warn_before=settings.env_warn_before,
            clock=clock,
        )
        store: BaseJobStore = (
            SQLAlchemyJobStore(url=settings.scheduler_url) if self.persistent else MemoryJobStore()
        )
        self.scheduler = AsyncIOScheduler(
            jobstores={"default": store},
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": int(settings.daily_grace.total_seconds()),
            },
            timezone=UTC,
        )

    async def start(self) -> None:
        """Plan every job, resume the grading queue, make what downtime missed."""
        jobs.register(self.key, self)
        self.scheduler.start()
        for community in await self.coach.communities.all():
            await self.plan_daily(community)
        for contest in await self.coach.contests.unfinished():
            await self.plan_contest(contest)
        self.scheduler.add_job(
            jobs.environments,
            IntervalTrigger(
                seconds=self.coach.settings.reap_every.total_seconds(), start_date=EPOCH
            ),
            args=[self.key],
            id="environments",
            replace_existing=True,
        )
        self.scheduler.add_job(
            jobs.publications,
            IntervalTrigger(seconds=PUBLISH_EVERY_S, start_date=EPOCH),
            args=[self.key],
            id="publications",
            replace_existing=True,
        )
        self.scheduler.add_job(
            jobs.firings,
            IntervalTrigger(seconds=self.sweep_every_s),
            args=[self.key],
            id="firings",
            replace_existing=True,
        )
        self.coach.communities.on_change(self.plan_daily)
        self.coach.contests.on_change(self.plan_contest)
        await self.coach.notify_interrupted(await self.coach.queue.resume())
        await self.retry_publications()  # once across replicas starting together
        await self.daily.catch_up()
        await self.coach.contests.settle_all()
        self.coach.boards.touch()

    async def stop(self) -> None:
        self.coach.communities.off_change(self.plan_daily)
        self.coach.contests.off_change(self.plan_contest)
        self.scheduler.shutdown(wait=False)
        jobs.unregister(self.key)

    async def plan_daily(self, community: Community) -> None:
        """The community's daily job: kept if unchanged, replaced if changed, removed if unset."""
        if community.platform not in self.coach.channels.platforms():
            return  # another process's platform
        job_id = f"daily:{community.id}"
        existing = self.scheduler.get_job(job_id)
        if not community.channel_id:
            if existing is not None:
                existing.remove()
            return
        trigger = daily_trigger(community)
        if existing is not None and repr(existing.trigger) == repr(trigger):
            return  # as stored: a run missed while down is still due
        self.scheduler.add_job(
            jobs.daily, trigger, args=[self.key, community.id], id=job_id, replace_existing=True
        )
        log.info("daily post of %s planned: %r", community.id, trigger)

    async def plan_contest(self, contest: Contest) -> None:
        """One date job per announcement still to make; overdue ones run now."""
        now = self.clock()
        for step in self.coach.contests.steps(contest):
            job_id = f"contest:{contest.id}:{step.name}"
            if contest.cancelled_at is not None or getattr(contest, DONE_COLUMN[step.name]):
                with contextlib.suppress(JobLookupError):
                    self.scheduler.remove_job(job_id)
                continue
            self.scheduler.add_job(
                jobs.contest,
                DateTrigger(run_date=max(step.at, now)),
                args=[self.key, contest.id],
                id=job_id,
                replace_existing=True,
                misfire_grace_time=None,  # an announcement is made however late
            )

    async def tick(
        self,
        name: str,
        every_s: float,
        work: Callable[[], Awaitable[object]],
        *,
        now: datetime | None = None,
    ) -> bool:
        """Run a periodic job's ``work`` if this replica claims its tick at ``now`` (default:
        the scheduler's time, not a test's clock); whether it did. Replicas serving other
        platforms claim their own tick (their work differs)."""
        at = tick_of(now or utcnow(), every_s)
        platforms = "+".join(sorted(self.coach.channels.platforms())) or "none"
        async with self.firings.once(f"{platforms}/{name}", at) as mine:
            if mine:
                await work()
        return mine

    async def retry_publications(self) -> bool:
        """Publish again what a platform refused for a while, if this replica claims the tick."""
        return await self.tick("publications", PUBLISH_EVERY_S, self.coach.publisher.retry_due)

    async def warn_environments(self) -> bool:
        """The expiry warnings by DM, if this replica claims the tick."""
        every_s = self.coach.settings.reap_every.total_seconds()
        return await self.tick("warnings", every_s, self.envs.warn)

    async def sweep(self) -> int:
        """Make again each firing of this replica's platforms whose claimer died (its lease
        passed); how many were tried. Old firings are pruned. With in-memory jobs, the daily
        posts and contests are planned again from the store first (another replica may have
        changed them)."""
        if not self.persistent:
            for community in await self.coach.communities.all():
                await self.plan_daily(community)
            for contest in await self.coach.contests.unfinished():
                await self.plan_contest(contest)
        prefixes = [f"{p}/" for p in sorted(self.coach.channels.platforms())]
        tried = 0
        for job, at in await self.firings.expired(prefixes):
            kind, _, ident = job.split("/", 1)[1].partition(":")
            try:
                if kind == "daily":
                    await self.daily.run(int(ident))
                elif kind == "contest":
                    await self.coach.contests.advance(int(ident.split(":", 1)[0]))
                # a periodic tick is not made again: the next tick does its work
            except Exception:
                log.exception("the retry of firing %s at %s failed", job, at)
                continue
            tried += 1
            await self.firings.close_idle(job, at)  # nothing was left to make
        await self.firings.prune()
        return tried

    def next_runs(self) -> dict[str, object]:
        """Each job's next run time (UTC), by id."""
        return {job.id: job.next_run_time for job in self.scheduler.get_jobs()}
