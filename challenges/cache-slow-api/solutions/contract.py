"""What both designs share: the HTTP contract, the upstream client, single-flight, the cache's
encoding. A design supplies ``read(id) -> product | None``.

Products travel as the upstream's JSON object; the cache stores ``{"product": <object or
null>, "fetched_at": <epoch seconds when the upstream call started>}`` so that a 404 is cached
too (bounded like a product: an id the upstream creates later is found within the bound).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from aiohttp import web

from challenges.service import env_int, json_error, tls_context, warn_throttled

Product = dict[str, Any]
Read = Callable[[str], Awaitable[Product | None]]
FIELDS = ("id", "name", "price_cents", "version")
UPSTREAM_TIMEOUT_S = 1.0
REDIS_TIMEOUT_S = 0.1  # a paused cache costs a read 0.1 s, then the upstream answers
KEY_PREFIX = "product:"


class UpstreamUnavailable(Exception):
    """The upstream refused (429, 5xx) or did not answer in time: the read answers 503."""


class Upstream:
    """``GET {PROVIDER_URL}/v1/products/<id>``; no retries (a retry spends the rate limit)."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.url = env["PROVIDER_URL"].rstrip("/")
        self.headers = {"Authorization": f"Bearer {env['PROVIDER_TOKEN']}"}
        self.tls = tls_context(env)
        self.http: aiohttp.ClientSession | None = None

    async def lifecycle(self, _app: web.Application) -> AsyncIterator[None]:
        timeout = aiohttp.ClientTimeout(total=UPSTREAM_TIMEOUT_S)
        self.http = aiohttp.ClientSession(timeout=timeout, headers=self.headers)
        yield
        await self.http.close()

    async def fetch(self, product_id: str) -> Product | None:
        assert self.http is not None
        try:
            async with self.http.get(f"{self.url}/v1/products/{product_id}", ssl=self.tls) as r:
                if r.status == 404:
                    return None
                if r.status != 200:
                    raise UpstreamUnavailable(f"upstream answered {r.status}")
                data = await r.json()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UpstreamUnavailable(type(exc).__name__) from exc
        return {f: data.get(f) for f in FIELDS}


class SingleFlight:
    """Concurrent calls for one key share one run of the work (Go's x/sync/singleflight)."""

    def __init__(self) -> None:
        self.flights: dict[str, asyncio.Task[Any]] = {}

    def start(self, key: str, work: Callable[[], Awaitable[Any]]) -> asyncio.Task[Any]:
        """The run in flight for ``key``, or a new one."""
        task = self.flights.get(key)
        if task is None:
            task = asyncio.ensure_future(work())
            self.flights[key] = task
            task.add_done_callback(lambda _t: self.flights.pop(key, None))
        return task

    async def do(self, key: str, work: Callable[[], Awaitable[Any]]) -> Any:
        return await asyncio.shield(self.start(key, work))  # a caller's timeout spares the run


def encode(product: Product | None, fetched_at: float) -> bytes:
    return json.dumps({"product": product, "fetched_at": fetched_at}).encode()


def decode(raw: bytes) -> tuple[Product | None, float]:
    data = json.loads(raw)
    return data["product"], float(data["fetched_at"])


async def cache_get(cache: aioredis.Redis, product_id: str) -> bytes | None:
    """The cached entry, or None when there is none or Redis does not answer (the read falls
    through to the upstream)."""
    try:
        return await cache.get(KEY_PREFIX + product_id)
    except (aioredis.RedisError, OSError) as exc:
        warn_throttled("cache-read", f"cache unavailable: {type(exc).__name__}")
        return None


async def cache_put(
    cache: aioredis.Redis, product_id: str, product: Product | None, fetched_at: float, ttl_s: float
) -> None:
    """Cache the upstream's answer until ``fetched_at + ttl_s`` (epoch seconds): an absolute
    expiry (``PXAT``, https://redis.io/docs/latest/commands/set/), so that a write Redis
    executes late — queued while it was paused — still expires on time."""
    try:
        await cache.set(
            KEY_PREFIX + product_id,
            encode(product, fetched_at),
            pxat=int((fetched_at + ttl_s) * 1000),
        )
    except (aioredis.RedisError, OSError) as exc:
        warn_throttled("cache-write", f"cache unavailable: {type(exc).__name__}")


def connect(url: str, **tls: str) -> aioredis.Redis:
    """A client that gives up fast and never retries: the upstream is the fallback."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        **tls,
        max_connections=32,
        timeout=REDIS_TIMEOUT_S,
        socket_timeout=REDIS_TIMEOUT_S,
        socket_connect_timeout=REDIS_TIMEOUT_S,
    )
    return aioredis.Redis(connection_pool=pool)


def stale_seconds(env: Mapping[str, str]) -> float:
    """The staleness bound of the bundle (``STALE_SECONDS``)."""
    return float(env_int(env, "STALE_SECONDS", 2))


def build_app(read: Read, env: Mapping[str, str]) -> web.Application:
    """``GET /v1/products/{id}``: 400 for a malformed id, 404, 503 when the upstream refused."""
    max_len = env_int(env, "MAX_ID_LENGTH", 32)
    valid = re.compile(rf"[a-z0-9-]{{1,{max_len}}}")

    async def get_product(request: web.Request) -> web.Response:
        product_id = request.match_info["id"]
        if not valid.fullmatch(product_id):
            return json_error(400, f"an id is 1..{max_len} characters of a-z, 0-9 and -")
        try:
            product = await read(product_id)
        except UpstreamUnavailable as exc:
            warn_throttled("upstream", f"upstream unavailable: {exc}")
            return json_error(503, "the upstream is unavailable")
        if product is None:
            return json_error(404, "no such product")
        return web.json_response(product)

    app = web.Application()
    app.router.add_get("/v1/products/{id}", get_product)
    return app
