"""The simulated provider, started by provisioning like any resource, scripted by the grader."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from bot.app import App
from grading.provider import Endpoint, Provider, ProviderAdmin, Window
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


# -- idempotency keys, as documented providers honour them -------------------------------------
@pytest.fixture
async def provider() -> AsyncIterator[tuple[str, Provider]]:
    """A provider in this process whose keys are remembered for 1 s."""
    endpoint = Endpoint("POST", "/v1/send", key="idempotency_key", idempotency_window_s=1.0)
    simulated = Provider([endpoint], "tok", "admin")
    runner = web.AppRunner(simulated.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", simulated
    await runner.cleanup()


async def post(url: str, body: dict[str, object], timeout_s: float = 2.0) -> tuple[int, dict]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as http,
        http.post(f"{url}/v1/send", json=body, headers={"Authorization": "Bearer tok"}) as resp,
    ):
        replayed = resp.headers.get("Idempotent-Replayed") == "true"
        return resp.status, {**await resp.json(), "replayed": replayed}


async def test_a_retry_with_the_same_key_replays_the_first_answer(
    provider: tuple[str, Provider],
) -> None:
    url, simulated = provider
    body = {"idempotency_key": "k", "message": "hi"}
    first, again = await post(url, body), await post(url, body)
    assert first[0] == again[0] == 200 and first[1]["id"] == again[1]["id"]
    assert again[1]["replayed"] and not first[1]["replayed"]
    assert [c.delivered for c in simulated.calls] == [True, False]  # one notification
    status, answer = await post(url, {"idempotency_key": "k", "message": "other"})
    assert status == 422 and "different body" in answer["error"]
    await asyncio.sleep(1.1)  # past the stated window the key is forgotten: a new send
    assert (await post(url, body))[1]["replayed"] is False
    assert sum(c.delivered for c in simulated.calls) == 2


async def test_a_retry_while_the_first_call_is_answered_gets_409_then_the_replay(
    provider: tuple[str, Provider],
) -> None:
    url, simulated = provider
    simulated.windows = [Window(0, 60, "slow", delay_ms=400)]
    simulated.script_t0 = time.time()
    body = {"idempotency_key": "slow", "message": "hi"}
    with pytest.raises(TimeoutError):  # a client that gives up after 0.1 s …
        await post(url, body, timeout_s=0.1)
    assert (await post(url, body))[0] == 409  # … retries while the first is still running
    await asyncio.sleep(0.4)
    status, answer = await post(url, body)
    assert status == 200 and answer["replayed"]
    assert sum(c.delivered for c in simulated.calls) == 1  # what the user receives: one


async def test_a_failed_call_did_not_happen_so_its_retry_is_new(
    provider: tuple[str, Provider],
) -> None:
    url, simulated = provider
    simulated.windows = [Window(0, 0.2, "error", status=503)]
    simulated.script_t0 = time.time()
    body = {"idempotency_key": "e", "message": "hi"}
    assert (await post(url, body))[0] == 503
    await asyncio.sleep(0.25)
    status, answer = await post(url, body)
    assert status == 200 and not answer["replayed"]
    assert [c.status for c in simulated.calls] == [503, 200]


async def test_slow_work_takes_its_time_answers_a_keyed_result_and_counts_deliveries() -> None:
    """``work_ms``: each body takes a fixed time in the range; ``result_of``: a result only the
    admin token makes; ``ProviderAdmin.deliveries`` counts what was done per body value."""
    endpoint = Endpoint("POST", "/v1/send", work_ms=(200, 300), result_of="input")
    simulated = Provider([endpoint], "tok", "admin")
    runner = web.AppRunner(simulated.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    try:
        started = time.monotonic()
        status, answer = await post(url, {"input": "a"})
        took = time.monotonic() - started
        assert status == 200 and 0.2 <= took < 0.6
        assert 0.2 <= endpoint.work_s({"input": "a"}) == endpoint.work_s({"input": "a"}) <= 0.3
        handle = ProviderAdmin(url, "admin")
        assert answer["result"] == handle.result("a") != ProviderAdmin(url, "x").result("a")
        assert len(answer["result"]) == 32
        await post(url, {"input": "a"})
        await post(url, {"input": "b"})
        assert await handle.deliveries("input", ["a", "c"]) == {"a": 2}
    finally:
        await runner.cleanup()
