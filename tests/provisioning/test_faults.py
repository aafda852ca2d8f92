"""Each fault action has the effect the grader relies on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import psycopg
import pytest
import redis.asyncio as aioredis
from botocore.exceptions import EndpointConnectionError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from provisioning.backend import Backend, ProvisioningError
from provisioning.environment import Environment
from provisioning.faults import FaultAction, FaultRecord
from provisioning.spec import Resource

from .clients import TIMEOUT, learner_s3, nats_connect
from .conftest import spec


@pytest.fixture(scope="module")
async def env(backend: Backend) -> AsyncIterator[Environment]:
    made = await backend.create("env-faults", spec())
    yield made
    await backend.destroy(made.id)


async def fault(
    backend: Backend, env: Environment, kind: Resource, action: FaultAction
) -> FaultRecord:
    record = await backend.fault(env.id, kind, action)
    assert record.env_id == env.id and record.resource == kind.value and record.action is action
    assert record.requested_at <= record.effective_at
    return record


def redis(env: Environment, budget: float = TIMEOUT) -> aioredis.Redis:
    return aioredis.from_url(
        env.bundle["REDIS_URL"], socket_timeout=budget, socket_connect_timeout=budget
    )


async def pg(env: Environment, budget: float = TIMEOUT) -> psycopg.AsyncConnection:
    return await asyncio.wait_for(
        psycopg.AsyncConnection.connect(
            env.bundle["DATABASE_URL"], autocommit=True, connect_timeout=3
        ),
        budget,
    )


async def health_of(backend: Backend, env: Environment, kind: Resource) -> bool:
    return next(h.ok for h in await backend.health(env.id) if h.resource == kind)


async def test_pause_hangs_requests_and_resume_heals(backend: Backend, env: Environment) -> None:
    client = redis(env, budget=0.5)
    try:
        assert await client.set("k", "v")
        await fault(backend, env, Resource.REDIS, FaultAction.PAUSE)
        with pytest.raises(RedisTimeoutError):
            await client.get("k")
        assert not await health_of(backend, env, Resource.REDIS)
        await fault(backend, env, Resource.REDIS, FaultAction.RESUME)
        fresh = redis(env)
        assert await fresh.get("k") == b"v"
        await fresh.aclose()
    finally:
        await client.aclose()

    await fault(backend, env, Resource.POSTGRES, FaultAction.PAUSE)
    with pytest.raises(TimeoutError):
        await pg(env, budget=0.5)
    await fault(backend, env, Resource.POSTGRES, FaultAction.RESUME)
    async with await pg(env) as conn:
        assert await (await conn.execute("SELECT 1")).fetchone() == (1,)


async def test_restart_keeps_data_port_and_credentials(backend: Backend, env: Environment) -> None:
    async with await pg(env) as conn:
        await conn.execute("CREATE TABLE kept (v int)")
        await conn.execute("INSERT INTO kept VALUES (7)")
    client = redis(env)
    await client.set("kept", "yes")
    await client.aclose()

    await asyncio.gather(
        fault(backend, env, Resource.POSTGRES, FaultAction.RESTART),
        fault(backend, env, Resource.REDIS, FaultAction.RESTART),
    )
    assert (await backend.get(env.id)).bundle == env.bundle  # type: ignore[union-attr]
    async with await pg(env) as conn:
        assert await (await conn.execute("SELECT v FROM kept")).fetchone() == (7,)
    client = redis(env)
    assert await client.get("kept") == b"yes"
    await client.aclose()


async def test_restart_lose_data_empties_valkey_and_is_refused_for_postgres(
    backend: Backend, env: Environment
) -> None:
    client = redis(env)
    await client.set("doomed", "1")
    await client.aclose()
    await fault(backend, env, Resource.REDIS, FaultAction.RESTART_LOSE_DATA)
    client = redis(env)
    assert await client.dbsize() == 0
    await client.aclose()
    with pytest.raises(ProvisioningError, match="durable"):
        await backend.fault(env.id, Resource.POSTGRES, FaultAction.RESTART_LOSE_DATA)


async def test_kill_refuses_connections_and_start_brings_it_back(
    backend: Backend, env: Environment
) -> None:
    async with await pg(env) as conn:
        await conn.execute("CREATE TABLE survivor (v int)")
        await conn.execute("INSERT INTO survivor VALUES (1)")
    learner_s3(env.bundle).put_object(Bucket=env.bundle["S3_BUCKET"], Key="before-kill", Body=b"1")

    await asyncio.gather(
        *(
            fault(backend, env, kind, FaultAction.KILL)
            for kind in (Resource.POSTGRES, Resource.REDIS, Resource.S3)
        )
    )
    with pytest.raises(psycopg.OperationalError, match="refused"):
        await pg(env)
    client = redis(env)
    with pytest.raises(RedisConnectionError):
        await client.ping()
    await client.aclose()
    with pytest.raises(EndpointConnectionError):
        learner_s3(env.bundle).head_bucket(Bucket=env.bundle["S3_BUCKET"])
    killed = {Resource.POSTGRES, Resource.REDIS, Resource.S3}
    assert not any(h.ok for h in await backend.health(env.id) if h.resource in killed)

    await asyncio.gather(
        *(
            fault(backend, env, kind, FaultAction.START)
            for kind in (Resource.POSTGRES, Resource.REDIS, Resource.S3)
        )
    )
    async with await pg(env) as conn:
        assert await (await conn.execute("SELECT v FROM survivor")).fetchone() == (1,)
    obj = learner_s3(env.bundle).get_object(Bucket=env.bundle["S3_BUCKET"], Key="before-kill")
    assert obj["Body"].read() == b"1"
    assert all(h.ok for h in await backend.health(env.id))


async def test_queue_restart_keeps_streams_and_lose_data_drops_them(
    backend: Backend, env: Environment
) -> None:
    nc = await nats_connect(env.bundle["NATS_URL"])
    js = nc.jetstream()
    await js.add_stream(name="JOBS", subjects=["jobs.*"])
    await js.publish("jobs.a", b"1")
    await nc.close()

    await fault(backend, env, Resource.QUEUE, FaultAction.RESTART)
    nc = await nats_connect(env.bundle["NATS_URL"])
    assert (await nc.jetstream().stream_info("JOBS")).state.messages == 1
    await nc.close()

    await fault(backend, env, Resource.QUEUE, FaultAction.RESTART_LOSE_DATA)
    nc = await nats_connect(env.bundle["NATS_URL"])
    assert await nc.jetstream().streams_info() == []
    await nc.close()
