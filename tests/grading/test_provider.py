"""The simulated provider, started by provisioning like any resource, scripted by the grader."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from bot.app import App
from grading.provider import ProviderAdmin, Window
from provisioning import Environment, EnvironmentSpec, FaultAction, Resource

MODULE = "tests.fixtures.provider_send"


@pytest.fixture(scope="module")
async def env(app: App) -> AsyncIterator[Environment]:
    spec = EnvironmentSpec((Resource.PROVIDER,), owner="test:provider", provider_module=MODULE)
    environment = await app.provisioner.up(spec)
    yield environment
    await app.provisioner.down(environment.id)


async def send(env: Environment, key: str, token: str | None = None) -> int:
    token = env.bundle["PROVIDER_TOKEN"] if token is None else token
    timeout = aiohttp.ClientTimeout(total=2)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        try:
            async with http.post(
                f"{env.bundle['PROVIDER_URL']}/v1/send",
                json={"idempotency_key": key},
                headers={"Authorization": f"Bearer {token}"},
            ) as resp:
                return resp.status
        except (aiohttp.ClientError, TimeoutError):
            return 0


def admin(env: Environment) -> ProviderAdmin:
    a = env.admin(Resource.PROVIDER)
    return ProviderAdmin(a["url"], a["admin_token"])


async def test_bundle_names_and_token_check(env: Environment) -> None:
    assert env.bundle["PROVIDER_URL"].startswith("http://127.0.0.1:")
    await admin(env).reset()
    assert await send(env, "k1") == 200
    assert await send(env, "k2", token="wrong") == 401
    calls = await admin(env).calls()
    assert [(c.key, c.status) for c in calls] == [("k1", 200), (None, 401)]


async def test_admin_api_needs_the_admin_token(env: Environment) -> None:
    with pytest.raises(aiohttp.ClientResponseError) as err:
        await ProviderAdmin(env.bundle["PROVIDER_URL"], env.bundle["PROVIDER_TOKEN"]).calls()
    assert err.value.status == 401


async def test_scripted_windows_shape_answers_deterministically(env: Environment) -> None:
    a = admin(env)
    await a.reset()
    await a.script([Window(0, 60, "error", rate=0.5, status=503)], seed=3)
    first = [await send(env, f"e{i}") for i in range(40)]
    await a.reset()
    await a.script([Window(0, 60, "error", rate=0.5, status=503)], seed=3)
    second = [await send(env, f"e{i}") for i in range(40)]
    assert first == second and set(first) == {200, 503}
    await a.script([Window(0, 60, "throttle")])
    assert await send(env, "t") == 429
    await a.script([Window(0, 60, "outage")])
    assert await send(env, "o") == 0
    await a.script([])
    assert await send(env, "ok") == 200
    statuses = [c.status for c in await a.calls()]
    assert statuses[-3:] == [429, 0, 200]


async def test_pausing_the_provider_is_an_outage(app: App, env: Environment) -> None:
    await app.provisioner.fault(env.id, Resource.PROVIDER, FaultAction.PAUSE)
    try:
        assert await send(env, "p") == 0
    finally:
        await app.provisioner.fault(env.id, Resource.PROVIDER, FaultAction.RESUME)
    await asyncio.sleep(0)
    assert await send(env, "p2") == 200
