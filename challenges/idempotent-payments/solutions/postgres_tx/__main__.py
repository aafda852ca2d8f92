"""Idempotent payments, reference design "postgres_tx": the key in PostgreSQL, one transaction.

Store: PostgreSQL only (``DATABASE_URL``). A checkout is one transaction:

1. ``INSERT`` the key's row (``pt_keys``, the key its primary key) ``ON CONFLICT DO NOTHING``;
2. charge the provider with the client's key as the provider's ``Idempotency-Key``;
3. ``INSERT`` the payment (``pt_payments``) and point the key's row at it;
4. ``COMMIT``, then answer ``201``.

The key's state machine is the transaction's: *started* is the uncommitted row, which nobody
else can see but whose unique-index entry makes a concurrent duplicate's ``INSERT`` wait;
*charged* is the committed row. When the first commits, the waiting duplicate's ``INSERT`` does
nothing, and it reads and replays the first answer — concurrent duplicates wait and replay
(``409`` only after ``lock_timeout``, 1 s). A retry after the request finished finds the row and
replays it (``422`` when the body's fingerprint differs).

Crash-safe because the provider keeps the key too: if the service, the connection or
PostgreSQL dies after the charge and before the commit, the transaction rolls back, nothing says
the order was charged, and the client's retry charges again *with the same key* — which the
provider answers by replaying the first charge, not by charging twice.

The price: a pooled connection and an open transaction are held across the provider's call,
so a slow provider holds connections (the pool's size bounds the checkouts in flight), and
while PostgreSQL is paused every checkout waits for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import psycopg
from aiohttp import web
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from challenges.service import add_health_check, run, tls_context, warn_throttled

from .. import contract

NAME = "idempotent-payments/postgres_tx"
SCHEMA = """
CREATE TABLE IF NOT EXISTS pt_payments (
    payment_id   text PRIMARY KEY,
    order_id     text NOT NULL,
    amount_cents bigint NOT NULL,
    currency     text NOT NULL,
    charge_id    text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS pt_keys (
    key         text PRIMARY KEY,
    fingerprint text NOT NULL,
    payment_id  text REFERENCES pt_payments,
    created_at  timestamptz NOT NULL DEFAULT now()
)
"""
CLAIM = "INSERT INTO pt_keys (key, fingerprint) VALUES (%s, %s) ON CONFLICT DO NOTHING RETURNING 1"
COLUMNS = "p.payment_id, p.order_id, p.amount_cents, p.currency"
READ_KEY = f"""
SELECT k.fingerprint, {COLUMNS} FROM pt_keys k JOIN pt_payments p USING (payment_id)
WHERE k.key = %s
"""
READ_PAYMENT = f"SELECT {COLUMNS} FROM pt_payments p WHERE p.payment_id = %s"
RECORD = """
WITH p AS (
    INSERT INTO pt_payments (payment_id, order_id, amount_cents, currency, charge_id)
    VALUES (%(payment_id)s, %(order_id)s, %(amount_cents)s, %(currency)s, %(charge_id)s)
)
UPDATE pt_keys SET payment_id = %(payment_id)s WHERE key = %(key)s
"""


def as_payment(row: tuple[Any, ...]) -> dict[str, Any]:
    payment_id, order_id, amount_cents, currency = row
    return contract.Checkout("", order_id, amount_cents, currency).payment(payment_id)


class TransactionalCheckout:
    def __init__(self, pool: AsyncConnectionPool, provider: contract.ProviderClient) -> None:
        self.pool = pool
        self.provider = provider

    async def ensure_schema(self) -> None:
        while True:
            try:
                async with self.pool.connection() as conn:
                    await conn.execute(SCHEMA)
                return
            except (psycopg.Error, PoolTimeout) as exc:
                warn_throttled("schema", f"cannot create the tables yet: {type(exc).__name__}")
                await asyncio.sleep(0.5)

    async def checkout(self, c: contract.Checkout) -> tuple[int, dict[str, Any]]:
        try:
            async with self.pool.connection() as conn, conn.transaction():
                if await (await conn.execute(CLAIM, (c.key, c.fingerprint))).fetchone() is None:
                    return await self.replay(conn, c)
                charge_id = await self.provider.charge(c)  # Refused rolls the claim back
                payment = c.payment(contract.new_payment_id())
                await conn.execute(RECORD, {**payment, "charge_id": charge_id, "key": c.key})
            return 201, payment
        except psycopg.errors.LockNotAvailable:
            raise contract.Refused(409, "a request with this key is in progress") from None
        except (psycopg.Error, PoolTimeout) as exc:
            warn_throttled("checkout", f"database unavailable: {type(exc).__name__}")
            raise contract.Refused(503, "database unavailable; retry with the same key") from None

    @staticmethod
    async def replay(conn: psycopg.AsyncConnection, c: contract.Checkout) -> tuple[int, dict]:
        row = await (await conn.execute(READ_KEY, (c.key,))).fetchone()
        if row is None:  # the first request rolled back between our INSERT and this read
            raise contract.Refused(409, "a request with this key was just abandoned; retry")
        if row[0] != c.fingerprint:
            raise contract.Refused(422, "this Idempotency-Key was used with another body")
        return 201, as_payment(row[1:])

    async def payment(self, payment_id: str) -> dict[str, Any] | None:
        try:
            async with self.pool.connection() as conn:
                row = await (await conn.execute(READ_PAYMENT, (payment_id,))).fetchone()
        except (psycopg.Error, PoolTimeout):
            raise contract.Refused(503, "database unavailable") from None
        return None if row is None else as_payment(row)

    async def health(self) -> None:
        async with self.pool.connection() as conn:
            await conn.execute("SELECT 1")


def build(env: Mapping[str, str]) -> web.Application:
    pool = AsyncConnectionPool(
        env["DATABASE_URL"],
        min_size=4,
        max_size=48,  # a checkout holds one across the provider's call
        open=False,
        timeout=2.0,
        # a duplicate waits at most 1 s for the first request with its key, then gets 409
        kwargs={"autocommit": True, "connect_timeout": 2, "options": "-c lock_timeout=1000"},
        name="payments-tx",
    )
    provider = contract.ProviderClient(
        env["PROVIDER_URL"], env["PROVIDER_TOKEN"], tls=tls_context(env)
    )
    design = TransactionalCheckout(pool, provider)
    app = contract.build_app(design.checkout, design.payment)
    add_health_check(app, "postgres", design.health)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await pool.open(wait=False)
        await provider.open()
        await design.ensure_schema()
        yield
        await provider.close()
        await pool.close(timeout=1.0)

    app.cleanup_ctx.append(lifecycle)
    return app


def main() -> None:
    run(NAME, build, required_env=["DATABASE_URL", "PROVIDER_URL", "PROVIDER_TOKEN"])


if __name__ == "__main__":
    main()
