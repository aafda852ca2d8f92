"""The warm pool: ready environments handed out at once, re-labelled, refilled, never leaked."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
import redis.asyncio as aioredis

from provisioning.backend import Backend
from provisioning.faults import FaultAction
from provisioning.manager import Provisioner
from provisioning.pool import POOL_OWNER
from provisioning.spec import EnvironmentSpec, Resource

from .clients import TIMEOUT

KINDS = (Resource.REDIS,)


def wanted(owner: str, **kw: object) -> EnvironmentSpec:
    return EnvironmentSpec(resources=KINDS, owner=owner, **kw)  # type: ignore[arg-type]


@pytest.fixture
async def prov(backend: Backend) -> AsyncIterator[Provisioner]:
    made = Provisioner(backend, pool_size=1)
    made.warm(wanted("anyone"))
    await made.pool.wait_full()
    yield made
    for env in await made.list():
        if env.owner.startswith("pool-"):
            await made.down(env.id)
    await made.close()


async def test_up_hands_out_a_pooled_environment_relabelled(
    prov: Provisioner, backend: Backend
) -> None:
    (idle,) = prov.pool.members()
    assert idle not in {e.id for e in await prov.list()}, "idle members are not anybody's"
    env = await prov.up(
        wanted("pool-a", ttl=timedelta(minutes=10), parameters={"RATE_LIMIT": "7"}, label="rl")
    )
    assert env.id == idle  # handed out from the pool, not started anew
    assert (env.owner, env.label, env.bundle["RATE_LIMIT"]) == ("pool-a", "rl", "7")
    assert timedelta(minutes=9) < env.expires_at - env.created_at <= timedelta(minutes=10)
    stored = await backend.get(env.id)
    assert stored is not None and stored.owner == "pool-a" and stored.parameters == env.parameters
    client = aioredis.from_url(env.bundle["REDIS_URL"], socket_timeout=TIMEOUT)
    assert await client.dbsize() == 0
    await client.aclose()

    await prov.pool.wait_full()
    (refill,) = prov.pool.members()
    assert refill != env.id
    assert env.id in {e.id for e in await prov.list(owner="pool-a")}


async def test_a_different_resource_set_is_made_cold(prov: Provisioner) -> None:
    (idle,) = prov.pool.members()
    env = await prov.up(EnvironmentSpec(resources=(Resource.QUEUE,), owner="pool-b"))
    assert env.id != idle and idle in prov.pool.members()
    assert set(env.resources) == {Resource.QUEUE}


async def test_an_unhealthy_member_is_never_handed_out(prov: Provisioner, backend: Backend) -> None:
    (idle,) = prov.pool.members()
    await backend.fault(idle, Resource.REDIS, FaultAction.KILL)
    env = await prov.up(wanted("pool-c"))
    assert env.id != idle
    assert await backend.get(idle) is None
    assert all(h.ok for h in await backend.health(env.id))


async def test_reconcile_keeps_live_members_and_close_destroys_them(backend: Backend) -> None:
    stale = await backend.create("env-stalepool", wanted(POOL_OWNER))  # an earlier process's
    prov = Provisioner(backend, pool_size=1)
    prov.warm(wanted("anyone"))
    await prov.pool.wait_full()
    (idle,) = prov.pool.members()
    handed_out = {e.id for e in await prov.list()}  # idle members are in no store
    assert await prov.reconcile(known=handed_out) == [stale.id]
    assert await backend.get(idle) is not None
    await prov.close()
    assert await backend.get(idle) is None


async def test_pool_size_zero_is_off(backend: Backend) -> None:
    prov = Provisioner(backend, pool_size=0)
    prov.warm(wanted("anyone"))
    assert prov.pool.members() == set()
    env = await prov.up(wanted("pool-d"))
    await prov.down(env.id)
