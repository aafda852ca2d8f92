"""Idempotent payments, reference design "redis_lock": a lock per key, the answer in Redis.

Stores: Redis for the keys, PostgreSQL for the payments. A checkout

1. ``GET``s the key's stored answer from Redis: found → replayed (``422`` for another body);
2. takes the key's lock, ``SET lock:<key> <token> NX PX 5000`` (https://redis.io/docs/latest/commands/set/);
   not taken → the answer if it was stored meanwhile, else ``409`` at once;
3. charges the provider with the client's key as the provider's ``Idempotency-Key``;
4. records the payment in PostgreSQL, ``INSERT … ON CONFLICT (idempotency_key)`` returning the
   row that is there, so a retry gets the payment_id the first attempt recorded;
5. stores the answer in Redis for 24 hours (the provider's window), releases the lock (a Lua
   compare-and-delete: only its own token) and answers ``201``.

The fast path — a retry, a replay — is one Redis round trip, no database.

The price is in what Redis does not promise. The lock expires: a request stuck longer than its
5 s lets a duplicate in, and Redis lost with its data (a restart without persistence) loses
every lock and stored answer. Neither double charges here, only because two other things hold
the key as well: the provider (a duplicate's charge is replayed, or refused ``409`` while the
first is in flight) and the payments table's unique ``idempotency_key`` (the same payment_id
again). Without the provider's idempotency, this design would charge twice after a Redis loss.
While Redis is down every checkout fails fast with ``503`` (fail closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncIterator, Mapping
from typing import Any

import psycopg
import redis.asyncio as aioredis
from aiohttp import web
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.retry import Retry

from challenges.service import add_health_check, redis_tls, run, tls_context, warn_throttled

from .. import contract

NAME = "idempotent-payments/redis_lock"
LOCK_MS = 5_000  # above a checkout's longest path: 3 provider attempts and the record
ANSWER_TTL_S = 24 * 3600  # as long as the provider keeps a key
SOCKET_TIMEOUT_S = 0.5
SCHEMA = """
CREATE TABLE IF NOT EXISTS rl_payments (
    payment_id      text PRIMARY KEY,
    idempotency_key text NOT NULL UNIQUE,
    fingerprint     text NOT NULL,
    order_id        text NOT NULL,
    amount_cents    bigint NOT NULL,
    currency        text NOT NULL,
    charge_id       text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
)
"""
RECORD = """
INSERT INTO rl_payments
    (payment_id, idempotency_key, fingerprint, order_id, amount_cents, currency, charge_id)
VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (idempotency_key) DO UPDATE SET idempotency_key = EXCLUDED.idempotency_key
RETURNING payment_id, fingerprint
"""
READ_PAYMENT = """
SELECT payment_id, order_id, amount_cents, currency FROM rl_payments WHERE payment_id = %s
"""
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class LockedCheckout:
    def __init__(
        self, r: aioredis.Redis, pool: AsyncConnectionPool, provider: contract.ProviderClient
    ) -> None:
        self.r = r
        self.pool = pool
        self.provider = provider
        self.release = r.register_script(RELEASE)

    async def ensure_schema(self) -> None:
        while True:
            try:
                async with self.pool.connection() as conn:
                    await conn.execute(SCHEMA)
                return
            except (psycopg.Error, PoolTimeout) as exc:
                warn_throttled("schema", f"cannot create the table yet: {type(exc).__name__}")
                await asyncio.sleep(0.5)

    async def checkout(self, c: contract.Checkout) -> tuple[int, dict[str, Any]]:
        try:
            return await self.replay(c) or await self.locked(c)
        except RedisError as exc:
            warn_throttled("redis", f"redis unavailable: {type(exc).__name__}")
            raise contract.Refused(503, "key store unavailable; retry with the same key") from None
        except (psycopg.Error, PoolTimeout) as exc:
            warn_throttled("postgres", f"database unavailable: {type(exc).__name__}")
            raise contract.Refused(503, "database unavailable; retry with the same key") from None

    async def replay(self, c: contract.Checkout) -> tuple[int, dict[str, Any]] | None:
        """The stored answer for ``c``'s key, if any."""
        raw = await self.r.get("answer:" + c.key)
        if raw is None:
            return None
        stored = json.loads(raw)
        if stored["fingerprint"] != c.fingerprint:
            raise contract.Refused(422, "this Idempotency-Key was used with another body")
        return 201, stored["payment"]

    async def locked(self, c: contract.Checkout) -> tuple[int, dict[str, Any]]:
        lock, token = "lock:" + c.key, secrets.token_hex(8)
        if not await self.r.set(lock, token, nx=True, px=LOCK_MS):
            found = await self.replay(c)  # it may have finished since our first look
            if found is None:
                raise contract.Refused(409, "a request with this key is in progress; retry")
            return found
        try:
            found = await self.replay(c)
            if found is not None:
                return found
            charge_id = await self.provider.charge(c)
            payment = await self.record(c, charge_id)
            stored = json.dumps({"fingerprint": c.fingerprint, "payment": payment})
            await self.r.set("answer:" + c.key, stored, ex=ANSWER_TTL_S)
            return 201, payment
        finally:
            with contextlib.suppress(RedisError):  # else it expires by itself
                await self.release(keys=[lock], args=[token])

    async def record(self, c: contract.Checkout, charge_id: str) -> dict[str, Any]:
        """Insert the payment, or find the one a previous attempt with this key recorded."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                RECORD,
                (contract.new_payment_id(), c.key, c.fingerprint, c.order_id, c.amount_cents)
                + (c.currency, charge_id),
            )
            payment_id, fingerprint = await cur.fetchone()  # type: ignore[misc]
        if fingerprint != c.fingerprint:
            raise contract.Refused(422, "this Idempotency-Key was used with another body")
        return c.payment(payment_id)

    async def payment(self, payment_id: str) -> dict[str, Any] | None:
        try:
            async with self.pool.connection() as conn:
                row = await (await conn.execute(READ_PAYMENT, (payment_id,))).fetchone()
        except (psycopg.Error, PoolTimeout):
            raise contract.Refused(503, "database unavailable") from None
        if row is None:
            return None
        return contract.Checkout("", row[1], row[2], row[3]).payment(row[0])


def connect_redis(env: Mapping[str, str]) -> aioredis.Redis:
    """Short bounded waits (fail fast); one immediate retry on a broken connection."""
    pool = aioredis.BlockingConnectionPool.from_url(
        env["REDIS_URL"],
        **redis_tls(env),
        max_connections=64,
        timeout=SOCKET_TIMEOUT_S,
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=SOCKET_TIMEOUT_S,
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
    )
    return aioredis.Redis(connection_pool=pool)


def build(env: Mapping[str, str]) -> web.Application:
    r = connect_redis(env)
    pool = AsyncConnectionPool(
        env["DATABASE_URL"],
        min_size=2,
        max_size=24,
        open=False,
        timeout=2.0,
        kwargs={"autocommit": True, "connect_timeout": 2},
        name="payments-lock",
    )
    provider = contract.ProviderClient(
        env["PROVIDER_URL"], env["PROVIDER_TOKEN"], tls=tls_context(env)
    )
    design = LockedCheckout(r, pool, provider)
    app = contract.build_app(design.checkout, design.payment)
    add_health_check(app, "redis", r.ping)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await pool.open(wait=False)
        await provider.open()
        await design.ensure_schema()
        yield
        await provider.close()
        await pool.close(timeout=1.0)
        await r.aclose(close_connection_pool=True)

    app.cleanup_ctx.append(lifecycle)
    return app


def main() -> None:
    run(NAME, build, required_env=["DATABASE_URL", "REDIS_URL", "PROVIDER_URL", "PROVIDER_TOKEN"])


if __name__ == "__main__":
    main()
