"""The simulated provider's read API: records the grader sets, a base latency, a rate limit."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from grading.provider import Endpoint, Provider
from provisioning.provider_protocol import ADMIN_HEADER, RECORDS

ITEMS = Endpoint("GET", "/v1/items/{id}", records=True, latency_ms=50, rate_limit=3)
SEND = Endpoint("POST", "/v1/send", required=("idempotency_key",), key="idempotency_key")
AUTH = {"Authorization": "Bearer t"}
ADMIN = {ADMIN_HEADER: "a"}


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    provider = Provider([ITEMS, SEND], "t", "a", records={"/v1/items/seed": {"id": "seed"}})
    async with TestClient(TestServer(provider.app())) as c:
        yield c


async def test_a_record_is_served_after_the_latency_and_404_without_one(
    client: TestClient,
) -> None:
    started = time.monotonic()
    resp = await client.get("/v1/items/seed", headers=AUTH)
    assert resp.status == 200 and await resp.json() == {"id": "seed"}
    assert time.monotonic() - started >= 0.05
    assert (await client.get("/v1/items/none", headers=AUTH)).status == 404
    assert (await client.get("/v1/items/seed")).status == 401


async def test_the_grader_sets_and_deletes_records(client: TestClient) -> None:
    body = {"records": {"/v1/items/x": {"id": "x", "version": 2}, "/v1/items/seed": None}}
    assert (await client.put(RECORDS, json=body)).status == 401
    resp = await client.put(RECORDS, json=body, headers=ADMIN)
    assert resp.status == 200 and (await resp.json())["t"] <= time.time()
    assert await (await client.get("/v1/items/x", headers=AUTH)).json() == {"id": "x", "version": 2}
    assert (await client.get("/v1/items/seed", headers=AUTH)).status == 404
    bad = await client.put(RECORDS, json={"records": {"/v1/items/x": 1}}, headers=ADMIN)
    assert bad.status == 400


async def test_beyond_the_rate_limit_calls_get_429_at_once(client: TestClient) -> None:
    statuses = [(await client.get(f"/v1/items/k{i}", headers=AUTH)).status for i in range(4)]
    started = time.monotonic()
    over = await client.get("/v1/items/seed", headers=AUTH)
    assert statuses[:3] == [404] * 3 and statuses[3] == over.status == 429
    assert over.headers["Retry-After"] == "1" and time.monotonic() - started < 0.05
    calls = (await (await client.get("/_admin/calls", headers=ADMIN)).json())["calls"]
    assert [(c["path"], c["status"]) for c in calls][-2:] == [
        ("/v1/items/k3", 429),
        ("/v1/items/seed", 429),
    ]


async def test_the_write_endpoints_are_unchanged(client: TestClient) -> None:
    resp = await client.post("/v1/send", json={"idempotency_key": "k"}, headers=AUTH)
    assert resp.status == 200
    again = await client.post("/v1/send", json={"idempotency_key": "k"}, headers=AUTH)
    assert again.headers["Idempotent-Replayed"] == "true"


async def test_scripted_windows_shape_record_reads_too(client: TestClient) -> None:
    script = {"windows": [{"start_s": 0, "end_s": 60, "mode": "error", "status": 502}]}
    assert (await client.put("/_admin/script", json=script, headers=ADMIN)).status == 200
    assert (await client.get("/v1/items/seed", headers=AUTH)).status == 502
