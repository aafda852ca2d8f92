"""Environments on the job engine: a *Start* through a front end is made by a worker (a real
``cruscible worker`` process), the bundle reaches the learner by DM from the front end, and
``env down`` through the front end is carried out by the worker; with no worker, the front end
stops waiting with a clear answer and the request is never made later."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select, text

from bot.core import envjobs
from bot.core.errors import CoachError
from bot.core.outbox import Actor
from bot.store.models import EnvironmentRecord, Provisioning
from tests.scale.conftest import RecordingOutbox, Workers, front_end
from tests.scale.test_worker_cli import cruscible

ADA = Actor("console", "ada", "ada")


async def test_a_worker_makes_and_destroys_what_a_front_end_asks_for(
    db_url: str, workers: Workers
) -> None:
    async with front_end(db_url, workers.root) as front:
        worker = workers.start(argv=[*cruscible(), "worker"], data_dir=front.settings.data_dir)
        await workers.registered(1, within=60)
        out = RecordingOutbox()
        env = await front.coach.provision(ADA, "rate-limiter", out)

        async with front.store.session() as s:
            (request,) = (await s.scalars(select(Provisioning))).all()
        assert (request.status, request.environment) == ("ready", env.id)
        assert request.worker is not None and f":{worker.pid}:" in request.worker  # host:pid:try
        # the bundle went to the learner privately; the reply only says where
        (dm,) = out.dms
        assert env.bundle["DATABASE_URL"] in dm.body
        assert all(env.bundle["DATABASE_URL"] not in m.body for _, m in out.edits)
        assert [e.id for e in await front.provisioner.list()] == [env.id]

        # the worker's refusal (its quota: 2 environments a learner) reaches the learner
        second = await front.coach.provision(ADA, "rate-limiter", RecordingOutbox())
        refused = RecordingOutbox()
        with pytest.raises(CoachError, match="the limit is 2 — destroy one first"):
            await front.coach.provision(ADA, "rate-limiter", refused)
        assert "the limit is 2" in refused.edits[-1][1].body
        await front.coach.env_destroy(ADA, second.id)

        gone = await front.coach.env_destroy(ADA, env.id)
        assert gone.title == f"Environment {env.id} destroyed", gone
        async with front.store.session() as s:
            record = await s.get_one(EnvironmentRecord, env.id)
        assert record.destroyed_at is not None
        assert await front.provisioner.list() == []
        assert "Traceback" not in workers.logs()


async def test_with_no_worker_a_start_is_refused_and_never_made_later(
    db_url: str, workers: Workers, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(envjobs, "PROVISION_WAIT_S", 1.0)
    async with front_end(db_url, workers.root) as front:
        out = RecordingOutbox()
        with pytest.raises(CoachError, match="no worker took the request within 1 s"):
            await front.coach.provision(ADA, "rate-limiter", out)
        assert "no worker took the request" in out.edits[-1][1].body
        assert out.dms == []

        workers.start(argv=[*cruscible(), "worker"], data_dir=front.settings.data_dir)
        await workers.registered(1, within=60)

        async def provision_jobs() -> int:  # jobs not yet done (done ones are deleted)
            async with front.store.session() as s:
                return await s.scalar(
                    text("SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'provision'")
                )

        async with asyncio.timeout(30):  # the worker takes the job, and leaves the request
            while await provision_jobs():  # noqa: ASYNC110 (another process's state)
                await asyncio.sleep(0.1)
        async with front.store.session() as s:
            assert (await s.scalars(select(Provisioning.status))).all() == ["abandoned"]
            assert (await s.scalars(select(EnvironmentRecord))).all() == []
        assert await front.provisioner.list() == []

        # A front end that stops waiting for another reason (its command cancelled) abandons
        # the request too: it is never made.
        workers.stop()
        waiting = asyncio.create_task(front.coach.provision(ADA, "rate-limiter", out))
        async with asyncio.timeout(10):
            while await provision_jobs() == 0:  # noqa: ASYNC110 (the job, deferred)
                await asyncio.sleep(0.05)
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        async with front.store.session() as s:
            statuses = (await s.scalars(select(Provisioning.status))).all()
        assert statuses == ["abandoned", "abandoned"]
