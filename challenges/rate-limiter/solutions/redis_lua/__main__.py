"""Rate limiter, reference design "redis_lua": a fixed window in Redis.

Store: Redis only (``REDIS_URL``). Algorithm: a fixed window per key,
anchored at the key's first request: the first admitted check creates the
counter with ``SET key cost PX window``; later checks add to it until the
counter expires and the next check opens a new window.

The decision is one Lua script (``EVALSHA``, falling back to ``EVAL`` when
the server answers ``NOSCRIPT``, e.g. after a restart). Redis runs a script
atomically, so read-compare-increment cannot interleave with another check:
however many replicas ask at once, a window never admits more than
``RATE_LIMIT``. One round trip per check; time is Redis's own (the TTL), so
the replicas' clocks do not matter.

The price of the algorithm: a window forgets everything when it ends. A client
that spends its whole budget at the end of one window and again at the start
of the next gets ``2 × RATE_LIMIT`` within a few milliseconds: the boundary
burst the grader measures. It is cheap (one small key per active client,
expiring on its own) and exact within a window; a sliding log or sliding
counter would smooth the boundary for more memory or an approximation.

The price of the store: the counters live in memory. Redis restarted with its
data lost forgets every window, so clients get a fresh budget (over-admission
right after the restart). While Redis is unreachable the service *fails
closed*: it answers ``503`` at once when Redis refuses connections, within
about half a second when Redis hangs (0.25 s socket and pool timeouts, at most
one immediate retry on a broken connection, a 1 s deadline per request),
instead of admitting unchecked traffic; ``/healthz`` answers 503 meanwhile. It
recovers by itself: redis-py reconnects on the next command once Redis is
back, and the script is re-sent after ``NOSCRIPT``. The other choice, failing
open (admit while the limiter is blind), keeps the service up at the price of
the limit; which one is right depends on what the limit protects.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Mapping

import redis.asyncio as aioredis
from aiohttp import web
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

from challenges.service import StoreUnavailable, add_health_check, redis_tls, run

from .. import contract

NAME = "rate-limiter/redis_lua"
KEY_PREFIX = "rl:fw:"
SOCKET_TIMEOUT_S = 0.25
TLS_CONNECT_TIMEOUT_S = 1.0  # a TLS handshake adds round trips and a key exchange
POOL_SIZE = 32
DEADLINE_S = 1.0

# KEYS[1] = the key's counter; ARGV = limit, cost, window in ms.
# Returns {allowed (0/1), used in this window, ms until the window ends}.
FIXED_WINDOW_LUA = b"""
local limit = tonumber(ARGV[1])
local cost = tonumber(ARGV[2])
local window_ms = tonumber(ARGV[3])
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used + cost > limit then
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl < 0 then
    -- a counter without expiry would block its key forever: give it one
    redis.call('PEXPIRE', KEYS[1], window_ms)
    ttl = window_ms
  end
  return {0, used, ttl}
end
if used == 0 then
  redis.call('SET', KEYS[1], cost, 'PX', window_ms)
  return {1, cost, window_ms}
end
return {1, redis.call('INCRBY', KEYS[1], cost), -1}
"""
FIXED_WINDOW_SHA = hashlib.sha1(FIXED_WINDOW_LUA).hexdigest()


class FixedWindowLimiter:
    def __init__(self, client: aioredis.Redis, limits: contract.Limits) -> None:
        self.client = client
        self.limits = limits

    async def decide(self, check: contract.Check) -> contract.Decision:
        args = (1, KEY_PREFIX + check.key, self.limits.limit, check.cost, self.limits.window_ms)
        try:
            try:
                allowed, used, ttl_ms = await self.client.evalsha(FIXED_WINDOW_SHA, *args)
            except NoScriptError:
                # EVAL also caches the script, so the next EVALSHA succeeds.
                allowed, used, ttl_ms = await self.client.eval(FIXED_WINDOW_LUA, *args)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise StoreUnavailable(str(exc)) from exc
        if allowed:
            return contract.Decision.allow(self.limits.limit - used)
        return contract.Decision.deny(ttl_ms / 1000)


def connect(url: str, **tls: str) -> aioredis.Redis:
    """A client whose every wait is short and bounded (fail fast, fail closed); ``tls`` for
    ``rediss://`` (:func:`challenges.service.redis_tls`)."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        **tls,
        max_connections=POOL_SIZE,
        timeout=SOCKET_TIMEOUT_S,  # waiting for a free connection
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=TLS_CONNECT_TIMEOUT_S if tls else SOCKET_TIMEOUT_S,
        # One immediate retry on a broken connection (a pooled connection to a
        # Redis that restarted); a timeout is not retried: the script may have
        # run, and the deadline is short anyway.
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
    )
    return aioredis.Redis(connection_pool=pool)


def build(env: Mapping[str, str]) -> web.Application:
    limits = contract.Limits.from_env(env)
    client = connect(env["REDIS_URL"], **redis_tls(env))
    app = contract.build_app(FixedWindowLimiter(client, limits), limits, deadline_s=DEADLINE_S)
    add_health_check(app, "redis", client.ping)

    async def redis_client(app: web.Application) -> AsyncIterator[None]:
        # Open the pool's connections before the first burst (each may cost a TLS handshake);
        # an unreachable Redis is /healthz's to report, not a reason not to start.
        await asyncio.gather(*(client.ping() for _ in range(POOL_SIZE)), return_exceptions=True)
        yield
        await client.aclose(close_connection_pool=True)

    app.cleanup_ctx.append(redis_client)
    return app


def main() -> None:
    run(NAME, build, required_env=["REDIS_URL"])


if __name__ == "__main__":
    main()
