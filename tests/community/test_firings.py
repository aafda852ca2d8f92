"""Claims of schedule firings on the default SQLite store, under a controlled clock: one
claimer per (job, fire time), a lease another takes over once it passed, a bounded number of
tries, expired claims listed by platform, old ones pruned; and the periodic ticks of two
operations over one store run once."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.core.firings import Firings
from bot.scheduler import Operations
from bot.scheduler.operations import tick_of
from bot.store import Store
from tests.community.support import Clock, RecordingChannels, coach_over

LEASE = timedelta(minutes=5)
AT = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


async def store_in(home: Path) -> Store:
    store = Store(f"sqlite+aiosqlite:///{home / 'store.db'}")
    await store.migrate()
    return store


async def test_one_claimer_per_firing_and_a_lease_taken_over_when_it_passed(
    home: Path, clock: Clock
) -> None:
    store = await store_in(home)
    try:
        a, b = (Firings(store, lease=LEASE, clock=clock, owner=o) for o in ("a", "b"))
        assert await a.claim("test/daily:1", AT)
        assert not await b.claim("test/daily:1", AT)  # held
        assert await b.claim("test/daily:1", AT + timedelta(days=1))  # another fire time
        await b.done("test/daily:1", AT + timedelta(days=1))
        assert await a.expired(["test/"]) == []

        clock.advance(minutes=6)  # a died: its lease passed
        assert await b.expired(["test/"]) == [("test/daily:1", AT)]
        assert await b.expired(["discord/"]) == []  # another platform's processes only
        assert await b.claim("test/daily:1", AT)
        assert not await a.claim("test/daily:1", AT)  # b holds it now
        await b.done("test/daily:1", AT)
        clock.advance(hours=1)
        assert not await a.claim("test/daily:1", AT) and not await b.claim("test/daily:1", AT)
        assert await a.expired(["test/"]) == []
    finally:
        await store.close()


async def test_a_failed_claimer_releases_at_once_and_tries_are_bounded(
    home: Path, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bot.core.firings")
    store = await store_in(home)
    try:
        a, b = (Firings(store, lease=LEASE, clock=clock, owner=o) for o in ("a", "b"))
        for claimer in (a, b, a):  # three tries, each failing
            with pytest.raises(ConnectionError):
                async with claimer.once("test/contest:1:open", AT) as mine:
                    assert mine
                    raise ConnectionError("the platform did not answer")
        async with b.once("test/contest:1:open", AT) as mine:
            assert not mine  # given up after three tries, and the log says so
        assert await b.expired(["test/"]) == []
        assert (
            "firing test/contest:1:open at 2026-11-30 08:00:00+00:00 given up after 3 tries"
            in caplog.text
        )
    finally:
        await store.close()


async def test_a_retry_with_nothing_left_to_make_is_closed_and_old_firings_pruned(
    home: Path, clock: Clock
) -> None:
    store = await store_in(home)
    try:
        a = Firings(store, lease=LEASE, clock=clock, owner="a")
        assert await a.claim("test/daily:1", AT)
        clock.advance(minutes=6)
        await a.close_idle("test/daily:1", AT)
        assert await a.expired(["test/"]) == []
        assert await a.prune() == 0  # kept two days
        clock.advance(days=3)
        assert await a.prune() == 1
        assert await a.claim("test/daily:1", AT)  # forgotten: no record of it left
    finally:
        await store.close()


def test_ticks_are_aligned_to_the_epoch() -> None:
    now = datetime(2026, 11, 30, 8, 0, 47, 500000, tzinfo=UTC)
    assert tick_of(now, 30) == datetime(2026, 11, 30, 8, 0, 30, tzinfo=UTC)
    assert tick_of(now, 60) == datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


async def test_two_operations_over_one_store_make_each_tick_once(home: Path, clock: Clock) -> None:
    runs: list[str] = []
    async with (
        coach_over(home, clock=clock, channels=RecordingChannels()) as one,
        coach_over(home, clock=clock, channels=RecordingChannels()) as two,
    ):
        first, second = Operations(one, clock=clock), Operations(two, clock=clock)
        for ops, name in ((first, "first"), (second, "second"), (first, "first")):

            async def work(name: str = name) -> None:
                runs.append(name)

            await ops.tick("publications", 30, work, now=AT + timedelta(seconds=10))
        assert runs == ["first"]  # one tick, made once
        assert await second.tick(
            "publications", 30, lambda: two.publisher.retry_due(), now=AT + timedelta(seconds=31)
        )
