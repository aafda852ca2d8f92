"""A worker's side of a ``provision`` job, over a real store: the request is this attempt's
until it ends; what an attempt made for a request that is no longer its own (the front end
gave up, a later attempt took over) is torn down, not left to count against the quota."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from procrastinate import App
from procrastinate.testing import InMemoryConnector
from sqlalchemy import update

from bot.app import open_store
from bot.config import Settings
from bot.core.envjobs import EnvironmentJobs
from bot.core.errors import CoachError
from bot.store import Store, User
from bot.store.models import Provisioning


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await open_store(Settings(data_dir=tmp_path))
    async with opened.session() as s:
        s.add(User(platform="console", platform_id="ada", display_name="ada"))
    yield opened
    await opened.close()


class Made:
    """The coach's side, recorded: environments made and destroyed."""

    def __init__(self, store: Store, *, abandon_while_making: bool = False, refuse: str = ""):
        self.store = store
        self.abandon_while_making = abandon_while_making
        self.refuse = refuse
        self.made: list[str] = []
        self.destroyed: list[str] = []

    async def make(self, user_id: int, challenge: str) -> str:
        if self.refuse:
            raise CoachError(self.refuse)
        if self.abandon_while_making:  # the front end stops waiting meanwhile
            async with self.store.session() as s:
                await s.execute(update(Provisioning).values(status="abandoned"))
        self.made.append(f"env-{len(self.made)}")
        return self.made[-1]

    async def destroy(self, env_id: str) -> None:
        self.destroyed.append(env_id)

    async def forget(self, env_id: str) -> None:
        return None

    async def reap(self) -> None:
        return None


def jobs(store: Store, made: Made) -> EnvironmentJobs:
    return EnvironmentJobs(
        App(connector=InMemoryConnector()),
        store,
        clock=lambda: datetime.now(UTC),
        make=made.make,
        destroy=made.destroy,
        forget=made.forget,
        reap_here=made.reap,
    )


async def request(store: Store, status: str = "queued") -> int:
    async with store.session() as s:
        row = Provisioning(user_id=1, challenge="rate-limiter", status=status)
        s.add(row)
        await s.flush()
        return row.id


async def status_of(store: Store, request_id: int) -> tuple[str, str | None, str | None]:
    async with store.session() as s:
        row = await s.get_one(Provisioning, request_id)
        return row.status, row.environment, row.error


async def test_a_request_is_made_once_and_recorded(store: Store) -> None:
    made = Made(store)
    env_jobs = jobs(store, made)
    rid = await request(store)
    await env_jobs._provision_job(rid)
    assert await status_of(store, rid) == ("ready", "env-0", None)
    await env_jobs._provision_job(rid)  # the engine ran the job again: nothing more is made
    assert made.made == ["env-0"] and made.destroyed == []


async def test_what_was_made_for_an_abandoned_request_is_torn_down(store: Store) -> None:
    made = Made(store, abandon_while_making=True)
    rid = await request(store)
    await jobs(store, made)._provision_job(rid)
    assert await status_of(store, rid) == ("abandoned", None, None)
    assert made.destroyed == made.made == ["env-0"]


async def test_a_request_abandoned_before_a_worker_took_it_is_never_made(store: Store) -> None:
    made = Made(store)
    rid = await request(store, status="abandoned")
    await jobs(store, made)._provision_job(rid)
    assert made.made == [] and await status_of(store, rid) == ("abandoned", None, None)


async def test_a_refusal_is_recorded_for_the_front_end(store: Store) -> None:
    made = Made(store, refuse="you already have 2 environments; the limit is 2")
    rid = await request(store)
    await jobs(store, made)._provision_job(rid)
    assert await status_of(store, rid) == (
        "failed",
        None,
        "you already have 2 environments; the limit is 2",
    )
