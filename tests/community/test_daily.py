"""The daily post at 09:00 local in two timezones, under a controlled clock; restarts before,
during and after the post time neither skip nor double it; the persistent job store."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from apscheduler.events import EVENT_JOB_EXECUTED
from sqlalchemy import delete

from bot.core.daily import DailyPoster
from bot.scheduler import Operations
from bot.store import DailyPost
from bot.store.models import ScheduleFiring
from tests.community.support import Clock, RecordingChannels, coach_over, community

PARIS, NEW_YORK = "Europe/Paris", "America/New_York"


def poster(coach, clock: Clock) -> DailyPoster:  # type: ignore[no-untyped-def]
    return DailyPoster(
        coach.communities, coach.catalog, coach.channels, grace=timedelta(hours=3), clock=clock
    )


async def test_the_post_goes_out_at_local_nine_in_each_timezone(home: Path, clock: Clock) -> None:
    channels = RecordingChannels()
    async with coach_over(home, clock=clock, channels=channels) as coach:
        paris = await community(coach, tz=PARIS, name="paris")
        ny = await community(coach, tz=NEW_YORK, name="ny")
        daily = poster(coach, clock)

        clock.now = datetime(2026, 11, 30, 7, 59, tzinfo=UTC)  # 08:59 in Paris
        assert await daily.catch_up() == []
        clock.now = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)  # 09:00 in Paris, 03:00 in NY
        assert await daily.run(ny.id) is None
        ref = await daily.run(paris.id)
        assert ref is not None and await daily.run(paris.id) is None  # not twice
        clock.now = datetime(2026, 11, 30, 14, 0, tzinfo=UTC)  # 09:00 in New York
        assert await daily.run(ny.id) is not None
        assert await daily.catch_up() == []

        (p, n) = channels.posts
        assert (p.community_id, p.channel_id, p.ping) == (paris.id, "#paris", True)
        assert n.community_id == ny.id
        today = coach.catalog.for_day(date(2026, 11, 30))
        assert (
            p.message.title
            == n.message.title
            == (f"Today's challenge: {today.spec.title} — Monday 30 November")
        )
        record = await coach.communities.daily_post(paris.id, date(2026, 11, 30))
        assert record is not None and (record.message_ref, record.challenge) == (ref, today.id)


async def test_the_rotation_does_not_repeat_within_a_cycle(home: Path, clock: Clock) -> None:
    channels = RecordingChannels()
    async with coach_over(home, clock=clock, channels=channels) as coach:
        c = await community(coach, tz=PARIS)
        daily = poster(coach, clock)
        cycle = len(list(coach.catalog))
        clock.now = datetime(2026, 11, 30, 8, 30, tzinfo=UTC)
        for _ in range(cycle * 2):
            assert await daily.run(c.id) is not None
            clock.advance(days=1)
        ids = [p.message.buttons[0].action for p in channels.posts]
        assert all(len(set(ids[i : i + cycle])) == cycle for i in range(cycle + 1))


async def test_restarts_before_during_and_after_the_post_time(home: Path, clock: Clock) -> None:
    channels = RecordingChannels()
    zone = ZoneInfo(PARIS)
    async with coach_over(home, clock=clock, channels=channels) as coach:
        c = await community(coach, tz=PARIS)

        # before: down at 08:50, back at 08:55 — nothing is due yet; at 09:00 it is made
        clock.now = datetime(2026, 11, 30, 8, 55, tzinfo=zone)
        assert await poster(coach, clock).catch_up() == []
        clock.now = datetime(2026, 11, 30, 9, 0, tzinfo=zone)
        assert await poster(coach, clock).run(c.id) is not None
        assert len(channels.posts) == 1

        # during: the post fails half-way (the platform never took it), the bot restarts
        clock.now = datetime(2026, 12, 1, 9, 0, tzinfo=zone)
        channels.crash_next = True
        with contextlib.suppress(ConnectionError):
            await poster(coach, clock).run(c.id)
        assert len(channels.posts) == 1
        clock.now = datetime(2026, 12, 1, 9, 2, tzinfo=zone)
        assert await poster(coach, clock).catch_up() != []  # made once on return
        assert await poster(coach, clock).catch_up() == []  # a second restart: not again
        assert len(channels.posts) == 2

        # after: down from 08:30 to 10:30 — made once on return, within the grace window
        clock.now = datetime(2026, 12, 2, 10, 30, tzinfo=zone)
        assert len(await poster(coach, clock).catch_up()) == 1
        assert await poster(coach, clock).catch_up() == []
        # …but not beyond it: down until 12:30 (3 h 30 after the post time), the day is skipped
        clock.now = datetime(2026, 12, 3, 12, 30, tzinfo=zone)
        assert await poster(coach, clock).catch_up() == []
        days = [p.message.title.rsplit("— ", 1)[1] for p in channels.posts]
        assert days == ["Monday 30 November", "Tuesday 01 December", "Wednesday 02 December"]


async def test_a_post_made_late_belongs_to_its_own_day(home: Path, clock: Clock) -> None:
    """At 23:30 with a two-hour downtime: made at 00:30 the next day, as the previous day's."""
    channels = RecordingChannels()
    async with coach_over(home, clock=clock, channels=channels) as coach:
        c = await community(coach, tz=PARIS, at="23:30")
        clock.now = datetime(2026, 12, 1, 0, 30, tzinfo=ZoneInfo(PARIS))
        await poster(coach, clock).catch_up()
        assert await coach.communities.daily_post(c.id, date(2026, 11, 30)) is not None
        assert await coach.communities.daily_post(c.id, date(2026, 12, 1)) is None


async def test_jobs_persist_across_restarts_and_follow_admin_changes(
    home: Path, clock: Clock
) -> None:
    channels = RecordingChannels()
    async with coach_over(home, clock=clock, channels=channels) as coach:
        paris = await community(coach, tz=PARIS, name="paris")
        ny = await community(coach, tz=NEW_YORK, name="ny")
        ops = Operations(coach, clock=clock)
        await ops.start()
        runs = ops.next_runs()
        await ops.stop()
    for job, zone in ((f"daily:{paris.id}", PARIS), (f"daily:{ny.id}", NEW_YORK)):
        local = runs[job].astimezone(ZoneInfo(zone))  # type: ignore[union-attr]
        assert (local.hour, local.minute) == (9, 0)
        assert timedelta(0) < runs[job] - datetime.now(UTC) <= timedelta(days=1)  # type: ignore[operator]
    assert "environments" in runs

    async with coach_over(home, clock=clock, channels=channels) as coach:  # a restart
        ops = Operations(coach, clock=clock)
        await ops.start()
        try:
            daily = {k: v for k, v in ops.next_runs().items() if k.startswith("daily:")}
            assert daily == {k: v for k, v in runs.items() if k.startswith("daily:")}  # as stored
            await coach.communities.configure(paris.id, post_time="07:15", timezone="Asia/Tokyo")
            moved = ops.next_runs()[f"daily:{paris.id}"].astimezone(ZoneInfo("Asia/Tokyo"))  # type: ignore[union-attr]
            assert (moved.hour, moved.minute) == (7, 15)
            assert ops.next_runs()[f"daily:{ny.id}"] == runs[f"daily:{ny.id}"]
        finally:
            await ops.stop()


async def test_a_run_missed_while_down_is_made_once_on_return(home: Path) -> None:
    """APScheduler's own store: the job's stored next run passed while the bot was down; on
    start it runs once (coalesced, within the grace window) — with the catch-up, one post."""
    channels = RecordingChannels()
    real = Clock(datetime.now(UTC))
    due = real.now - timedelta(minutes=10)
    async with coach_over(home, clock=real, channels=channels) as coach:
        c = await community(coach, at=f"{due:%H:%M}")
        ops = Operations(coach, clock=real)
        await ops.start()
        assert len(channels.posts) == 1  # the catch-up made it
        await ops.stop()
        async with coach.store.session() as s:  # as if the post had never been made
            await s.execute(delete(DailyPost))
            await s.execute(delete(ScheduleFiring))
        ops.scheduler.start(paused=True)  # mark the stored job overdue, as downtime would
        ops.scheduler.modify_job(f"daily:{c.id}", next_run_time=due)
        ops.scheduler.shutdown(wait=False)

        ops = Operations(coach, clock=real)
        ran: list[str] = []
        ops.scheduler.add_listener(lambda e: ran.append(e.job_id), EVENT_JOB_EXECUTED)
        await ops.start()
        await asyncio.sleep(0.3)  # the misfired job runs on the scheduler's first wake-up
        await ops.stop()
    assert ran == [f"daily:{c.id}"]  # APScheduler ran the missed run once…
    assert len(channels.posts) == 2  # …and with the start-up catch-up, one post, not two
