"""Slow-API cache, reference design "ttl_cache": Redis cache-aside with a TTL, single-flight.

Stores: Redis (``REDIS_URL``) caches each product, and each 404, for ``TTL_SHARE`` of
``STALE_SECONDS`` (1 s of a 2 s bound); the upstream (``PROVIDER_URL``) is the truth.

A read looks in Redis; on a miss it calls the upstream and stores the answer with the TTL.
Misses of one product in this process share one upstream call (single-flight): a cold hot key
costs one call, not one per waiting read.

What it buys: the upstream sees about one call per product per TTL, whatever the read rate;
an entry is at most a TTL old (it expires at an absolute time counted from the start of the
upstream call that filled it), well inside the bound.

The price:

* every TTL, the reads of a hot product that arrive while its refill is in flight wait for the
  upstream (100 ms): the tail latency carries the misses;
* several replicas each coalesce only their own misses (a Redis lock would coalesce across
  them, for another round trip on every miss);
* while Redis does not answer, every read goes to the upstream (after a 0.1 s timeout),
  coalesced per product but no longer cached: past the upstream's rate limit those reads get
  503 — a read is refused rather than served from nowhere.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping

from aiohttp import web

from challenges.service import add_health_check, redis_tls, run

from .. import contract

NAME = "cache-slow-api/ttl_cache"
TTL_SHARE = 0.5  # of STALE_SECONDS


class TtlCache:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.cache = contract.connect(env["REDIS_URL"], **redis_tls(env))
        self.upstream = contract.Upstream(env)
        self.ttl_s = contract.stale_seconds(env) * TTL_SHARE
        self.flight = contract.SingleFlight()

    async def read(self, product_id: str) -> contract.Product | None:
        raw = await contract.cache_get(self.cache, product_id)
        if raw is not None:
            return contract.decode(raw)[0]
        return await self.flight.do(product_id, lambda: self.fill(product_id))

    async def fill(self, product_id: str) -> contract.Product | None:
        started = time.time()
        product = await self.upstream.fetch(product_id)
        await contract.cache_put(self.cache, product_id, product, started, self.ttl_s)
        return product

    async def redis_client(self, _app: web.Application) -> AsyncIterator[None]:
        yield
        await self.cache.aclose(close_connection_pool=True)


def build(env: Mapping[str, str]) -> web.Application:
    design = TtlCache(env)
    app = contract.build_app(design.read, env)
    add_health_check(app, "redis", design.cache.ping)
    app.cleanup_ctx.append(design.upstream.lifecycle)
    app.cleanup_ctx.append(design.redis_client)
    return app


def main() -> None:
    run(NAME, build, required_env=["REDIS_URL", "PROVIDER_URL", "PROVIDER_TOKEN"])


if __name__ == "__main__":
    main()
