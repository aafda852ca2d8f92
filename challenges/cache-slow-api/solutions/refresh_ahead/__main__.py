"""Slow-API cache, reference design "refresh_ahead": entries refreshed before they go stale.

Stores: Redis (``REDIS_URL``) keeps each product, and each 404, with the time its upstream
call started; the entry expires in Redis at ``HARD_SHARE`` of ``STALE_SECONDS`` (1.5 s of a
2 s bound). The upstream (``PROVIDER_URL``) is the truth.

A read answers a cached entry at once. When the entry is older than ``REFRESH_SHARE`` of the
bound (0.8 s), the read also starts a background refresh (single-flight: one per product in
flight), so the next reads find it renewed — "stale-while-revalidate" (RFC 5861 §3), with the
staleness capped by the hard expiry. Only a product nobody read within the hard age misses and
waits for the upstream, coalesced with the other reads of it.

What it buys: a hot product never makes a read wait for the upstream after its first miss,
so the tail latency under a hot key is Redis's, not the upstream's.

The price:

* more upstream calls than a plain TTL: a hot product is refreshed every ~0.8 s instead of
  every 1 s, and a refresh is spent even if nobody reads the new value;
* the refresh runs after the read answered, so the answer a read gets may be up to the hard
  age old (never more: Redis drops the entry then);
* while Redis does not answer, reads fall through to the upstream as in ``ttl_cache``:
  coalesced per product, and 503 beyond the rate limit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping

from aiohttp import web

from challenges.service import add_health_check, redis_tls, run

from .. import contract

NAME = "cache-slow-api/refresh_ahead"
REFRESH_SHARE = 0.4  # of STALE_SECONDS: a read of an older entry refreshes it
HARD_SHARE = 0.75  # of STALE_SECONDS: Redis drops the entry


def refused(task: asyncio.Task[contract.Product | None]) -> None:
    """Collect a background refresh's failure (the entry keeps its hard expiry)."""
    if not task.cancelled():
        task.exception()


class RefreshAhead:
    def __init__(self, env: Mapping[str, str]) -> None:
        bound = contract.stale_seconds(env)
        self.cache = contract.connect(env["REDIS_URL"], **redis_tls(env))
        self.upstream = contract.Upstream(env)
        self.refresh_after_s = bound * REFRESH_SHARE
        self.hard_s = bound * HARD_SHARE
        self.flight = contract.SingleFlight()

    async def read(self, product_id: str) -> contract.Product | None:
        raw = await contract.cache_get(self.cache, product_id)
        if raw is None:
            return await self.flight.do(product_id, lambda: self.fill(product_id))
        product, fetched_at = contract.decode(raw)
        if time.time() - fetched_at >= self.refresh_after_s:
            task = self.flight.start(product_id, lambda: self.fill(product_id))
            task.add_done_callback(refused)  # a refused refresh leaves the entry to expire
        return product

    async def fill(self, product_id: str) -> contract.Product | None:
        started = time.time()
        product = await self.upstream.fetch(product_id)
        await contract.cache_put(self.cache, product_id, product, started, self.hard_s)
        return product

    async def redis_client(self, _app: web.Application) -> AsyncIterator[None]:
        yield
        await asyncio.gather(*self.flight.flights.values(), return_exceptions=True)
        await self.cache.aclose(close_connection_pool=True)


def build(env: Mapping[str, str]) -> web.Application:
    design = RefreshAhead(env)
    app = contract.build_app(design.read, env)
    add_health_check(app, "redis", design.cache.ping)
    app.cleanup_ctx.append(design.upstream.lifecycle)
    app.cleanup_ctx.append(design.redis_client)
    return app


def main() -> None:
    run(NAME, build, required_env=["REDIS_URL", "PROVIDER_URL", "PROVIDER_TOKEN"])


if __name__ == "__main__":
    main()
