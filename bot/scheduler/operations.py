"""Community operations of a running bot: the persistent scheduler and the grading queue.

Jobs live in APScheduler's SQLAlchemy job store, in the store's database (synchronously: the
job store of APScheduler 3 is sync). At start-up they are planned again from the store:

- ``daily:<community>`` — a cron job at the community's local post time, in its timezone. An
  unchanged job is kept as stored, so one missed during downtime runs once on return (coalesce,
  within ``daily_grace``); a changed channel, time or timezone replaces it at once. A catch-up
  at start-up covers a post the crash interrupted (APScheduler had already moved the job on);
  :class:`~bot.core.daily.DailyPoster` posts nothing twice.
- ``contest:<id>:<step>`` — one date job per announcement still to make, overdue ones now.
- ``environments`` — the reaper and the expiry warnings, every ``reap_every``.
- ``publications`` — results a platform refused for a while, published again when due
  (every ``PUBLISH_EVERY_S`` seconds; each publication keeps its own backoff in the store).

Only one process should run operations over one database.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import UTC

from apscheduler.jobstores.base import JobLookupError
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
DONE_COLUMN = {"open": "opened_at", "remind": "reminded_at", "close": "closed_at"}


def daily_trigger(community: Community) -> CronTrigger:
    hour, minute = post_clock(community)
    return CronTrigger(hour=hour, minute=minute, timezone=community.timezone)


class Operations:
    def __init__(self, coach: Coach, *, clock: Clock = utcnow) -> None:
        settings = coach.settings
        self.coach = coach
        self.clock = clock
        self.key = settings.scheduler_url
        self.daily = DailyPoster(
            coach.communities,
            coach.catalog,
            coach.channels,
            grace=settings.daily_grace,
            clock=clock,
        )
        self.envs = EnvWatch(
            coach.store,
            coach.provisioner,
            coach.channels,
            warn_before=settings.env_warn_before,
            clock=clock,
        )
        self.scheduler = AsyncIOScheduler(
            jobstores={"default": SQLAlchemyJobStore(url=settings.scheduler_url)},
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
            IntervalTrigger(seconds=self.coach.settings.reap_every.total_seconds()),
            args=[self.key],
            id="environments",
            replace_existing=True,
        )
        self.scheduler.add_job(
            jobs.publications,
            IntervalTrigger(seconds=PUBLISH_EVERY_S),
            args=[self.key],
            id="publications",
            replace_existing=True,
        )
        self.coach.communities.on_change(self.plan_daily)
        self.coach.contests.on_change(self.plan_contest)
        await self.coach.notify_interrupted(await self.coach.queue.resume())
        await self.coach.publisher.retry_due()
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

    def next_runs(self) -> dict[str, object]:
        """Each job's next run time (UTC), by id."""
        return {job.id: job.next_run_time for job in self.scheduler.get_jobs()}
