"""URL shortener, reference design "cache_aside": Redis in front of PostgreSQL, invalidated on write.

Stores: PostgreSQL (``DATABASE_URL``) holds every link and is the truth; Redis
(``REDIS_URL``) caches ``code → url`` for redirects.

A redirect reads Redis first; on a miss it reads PostgreSQL and fills the cache
with a TTL. An update or delete writes PostgreSQL first and, once the statement
has committed, *deletes* the cached entry (never writes the new value into the
cache: two concurrent writers could leave the older value there). The next
redirect misses and reads the new row. An unknown code is not cached, so a
link created later is found at once.

What it buys: the hot links (reads follow a Zipf law) are answered from memory,
and PostgreSQL sees roughly one lookup per link per invalidation or TTL instead
of one per redirect.

The price, which is the point of the challenge:

* Every write must reach the cache. When the delete cannot be sent (Redis is
  down), the code is kept in a *pending* map and redirects for it skip the
  cache until a background loop (every 100 ms) has deleted it. That map lives
  in this process: with several replicas, another replica would not skip the
  cache meanwhile, and the TTL would be what bounds the staleness.
* The classic cache-aside race remains: a redirect that missed and read the
  old row just before an update committed can put the old URL back after the
  invalidation. The window is a database round trip wide; the TTL
  (:data:`TTL_S`) bounds how long such an entry can live.
* A cold cache (Redis restarted empty) sends every redirect to PostgreSQL at
  once until the hot links are cached again.
* Redis failing is not a redirect failing: with short timeouts (0.1 s) and no
  retries on the read path, a redirect falls back to PostgreSQL when Redis
  refuses or does not answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Mapping

import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import RedisError

from challenges.service import add_health_check, redis_tls, run, warn_throttled

from .. import contract
from ..postgres import PostgresLinks

NAME = "url-shortener/cache_aside"
DEADLINE_S = 1.0
KEY_PREFIX = "link:"
TTL_S = 60
REDIS_TIMEOUT_S = 0.1
POOL_SIZE = 32
RETRY_EVERY_S = 0.1


class CachedLinks:
    def __init__(self, db: PostgresLinks, cache: aioredis.Redis) -> None:
        self.db = db
        self.cache = cache
        self.pending: dict[str, int] = {}  # code → token of its latest failed invalidation
        self.tokens = itertools.count()

    async def create(self, code: str, url: str) -> bool:
        return await self.db.create(code, url)  # unknown codes are never cached

    async def resolve(self, code: str) -> str | None:
        use_cache = code not in self.pending
        if use_cache:
            try:
                hit = await self.cache.get(KEY_PREFIX + code)
            except RedisError as exc:
                warn_throttled("cache-read", f"cache unavailable: {type(exc).__name__}")
                hit, use_cache = None, False
            if hit is not None:
                return hit.decode()
        url = await self.db.resolve(code)
        if url is not None and use_cache and code not in self.pending:
            with contextlib.suppress(RedisError):
                await self.cache.set(KEY_PREFIX + code, url, ex=TTL_S)
        return url

    async def update(self, code: str, url: str) -> bool:
        changed = await self.db.update(code, url)
        if changed:
            await self.invalidate(code)
        return changed

    async def delete(self, code: str) -> bool:
        deleted = await self.db.delete(code)
        if deleted:
            await self.invalidate(code)
        return deleted

    async def invalidate(self, code: str) -> None:
        """Delete the cached entry after the commit; remember it when Redis cannot be told."""
        try:
            await self.cache.delete(KEY_PREFIX + code)
        except RedisError as exc:
            self.pending[code] = next(self.tokens)
            warn_throttled("invalidate", f"invalidation deferred: {type(exc).__name__}")

    async def retry_forever(self) -> None:
        """Send the deferred invalidations until Redis takes them."""
        while True:
            await asyncio.sleep(RETRY_EVERY_S)
            if not self.pending:
                continue
            batch = dict(self.pending)
            try:
                await self.cache.delete(*(KEY_PREFIX + code for code in batch))
            except RedisError:
                continue
            for code, token in batch.items():
                if self.pending.get(code) == token:  # not deferred again meanwhile
                    del self.pending[code]


def connect(url: str, **tls: str) -> aioredis.Redis:
    """A client that gives up fast: a redirect would rather ask PostgreSQL than wait; ``tls``
    for ``rediss://`` (:func:`challenges.service.redis_tls`)."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        **tls,
        max_connections=POOL_SIZE,
        timeout=REDIS_TIMEOUT_S,  # waiting for a free connection
        socket_timeout=REDIS_TIMEOUT_S,
        socket_connect_timeout=REDIS_TIMEOUT_S,
    )
    return aioredis.Redis(connection_pool=pool)  # no retries: fall back instead


def build(env: Mapping[str, str]) -> web.Application:
    db = PostgresLinks(env["DATABASE_URL"], timeout_s=DEADLINE_S)
    cache = connect(env["REDIS_URL"], **redis_tls(env))
    links = CachedLinks(db, cache)
    app = contract.build_app(links, deadline_s=DEADLINE_S)
    # Ready when PostgreSQL is: a redirect can be served without Redis.
    add_health_check(app, "postgres", db.health)

    async def background(app: web.Application) -> AsyncIterator[None]:
        retry = asyncio.create_task(links.retry_forever())
        yield
        retry.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await retry
        await cache.aclose(close_connection_pool=True)

    app.cleanup_ctx.append(db.lifecycle)
    app.cleanup_ctx.append(background)
    return app


def main() -> None:
    run(NAME, build, required_env=["DATABASE_URL", "REDIS_URL"])


if __name__ == "__main__":
    main()
