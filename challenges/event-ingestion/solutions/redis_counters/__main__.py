"""Event ingestion, reference design "redis_counters": sorted sets in Redis, one script per batch.

Store: Redis only (``REDIS_URL``). Each (site, path) has a sorted set whose members are
event_ids scored by their ``ts``. ``POST /v1/events`` runs one Lua script for the whole
batch: ``ZADD NX`` of every event (a member already there — a retried or overlapping
batch — is not added again) and ``SADD`` of its path to the site's set of paths. Redis
runs the script atomically, in memory, in one round trip: the 202 costs about as much
as the network. ``GET /v1/stats`` is one more script: for each path of the site, a
``ZCOUNT`` over ``[from, to)`` — logarithmic in the events kept, whatever the window.
Counts are exact and visible the moment the script ran.

The price is the store. The sorted sets keep one member per event (about 80 bytes): at
a million events a day that is some 80 MB a day, more than the environment's 64 MB cap
within the first day, so a real deployment needs a retention window
(``ZREMRANGEBYSCORE``) or a compact rollup (per-second counts, with a separate expiring
set of recent event_ids for the dedupe — exact only within that set's window). And the
counts live in memory: this environment's Redis has no persistence except across a
clean restart, so a restart that loses its data forgets every count, and a pause stalls
every request (answered 503 after :data:`DEADLINE_S`; the client resends, and ``ZADD
NX`` makes the resend harmless). For counts that must survive, PostgreSQL (or AOF with
``fsync``) is the durable place; Redis here is the fast one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import redis.asyncio as aioredis
from aiohttp import web
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from challenges.service import add_health_check, redis_tls, run

from .. import contract

NAME = "event-ingestion/redis_counters"
DEADLINE_S = 1.0

# ARGV: event_id, site, path, ts, repeated. Sorted set per site+path; set of paths per site.
INGEST_LUA = """
local added = 0
for i = 1, #ARGV, 4 do
  local site, path = ARGV[i + 1], ARGV[i + 2]
  added = added + redis.call('ZADD', 'ev:z:' .. site .. '\\0' .. path, 'NX', ARGV[i + 3], ARGV[i])
  redis.call('SADD', 'ev:paths:' .. site, path)
end
return added
"""
# ARGV: site, from (inclusive), to (exclusive). Returns path, count, path, count …
STATS_LUA = """
local out = {}
for _, path in ipairs(redis.call('SMEMBERS', 'ev:paths:' .. ARGV[1])) do
  local n = redis.call('ZCOUNT', 'ev:z:' .. ARGV[1] .. '\\0' .. path, ARGV[2], '(' .. ARGV[3])
  if n > 0 then
    out[#out + 1] = path
    out[#out + 1] = n
  end
end
return out
"""


class RedisStore:
    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self.ingest_script = client.register_script(INGEST_LUA)
        self.stats_script = client.register_script(STATS_LUA)

    async def ingest(self, events: list[contract.Event]) -> None:
        args: list[str | int] = []
        for e in events:
            args += [e.event_id, e.site, e.path, e.ts]
        await self.ingest_script(args=args)

    async def stats(self, window: contract.Window) -> dict[str, int]:
        flat = await self.stats_script(args=[window.site, window.start, window.end])
        return {flat[i].decode(): int(flat[i + 1]) for i in range(0, len(flat), 2)}


def build(
    env: Mapping[str, str], store: Callable[[aioredis.Redis], Any] = RedisStore
) -> web.Application:
    """The service around ``store`` (made from the Redis client; default this design's)."""
    pool = aioredis.BlockingConnectionPool.from_url(
        env["REDIS_URL"],
        **redis_tls(env),
        max_connections=32,
        timeout=DEADLINE_S,
        socket_timeout=DEADLINE_S,
        socket_connect_timeout=DEADLINE_S,
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
    )
    client = aioredis.Redis(connection_pool=pool)
    app = contract.build_app(
        store(client),
        deadline_s=DEADLINE_S,
        errors=(RedisConnectionError, RedisTimeoutError),
    )
    add_health_check(app, "redis", client.ping)

    async def redis_client(app: web.Application) -> AsyncIterator[None]:
        yield
        await client.aclose(close_connection_pool=True)

    app.cleanup_ctx.append(redis_client)
    return app


def main() -> None:
    run(NAME, build, required_env=["REDIS_URL"])


if __name__ == "__main__":
    main()
