"""Notification service, reference design "sync_delivery": deliver inside the request.

``POST /v1/events`` claims the event_id in PostgreSQL (``INSERT … ON CONFLICT DO
NOTHING`` into ``notify_sync``), calls the provider itself and answers ``202`` only
once the provider said 200 — so here a 202 means "delivered". No queue, no worker,
no lag: the simplest thing that is correct, and quick to build.

Retries are bounded by the caller's patience: within :data:`DEADLINE_S` the request
tries again after a 5xx or a dropped connection (50 ms, then 100 ms …) and after a
429 once its ``Retry-After`` still fits. When the budget runs out the claim is
deleted and the answer is ``503``: the event was *not* accepted and the client must
send it again. That is the honest failure — never a 202 for a notification that was
not sent — but it hands the provider's outage to every caller.

Exactly one notification: a resend finds the claim. ``delivered`` answers 202 at
once; ``sending`` (a concurrent resend) waits for the first request's outcome, and
claims the event itself if that one gave up. One attempt is never abandoned before the
provider could answer (:data:`ATTEMPT_TIMEOUT_S` is above any slow answer the
provider gives), because a call cut short may still have been delivered.

A claim is a lease of :data:`LEASE_S`, longer than any request can hold it. A request
that could not record its outcome — PostgreSQL paused, no pooled connection within a
second, after the provider already said 200 — leaves a ``sending`` row behind and answers
503; the client's resend takes the stale claim over and sends again with the same
idempotency key, which the provider answers from its first 200 without notifying twice.
Without the lease that event would be refused for good.

The price: the ingest latency *is* the provider's latency (a slow provider makes
every request slow; a 429 holds the caller a whole second), the service fails when
the provider fails, and at 250 events/s each second of provider slowness keeps
hundreds of requests and connections open.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping

import psycopg
from aiohttp import web
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from challenges.service import add_health_check, json_error, run, tls_context, warn_throttled

from .. import contract

NAME = "notification-service/sync_delivery"
DEADLINE_S = 1.6
ATTEMPT_TIMEOUT_S = 1.4
POLL_S = 0.05
LEASE_S = DEADLINE_S + ATTEMPT_TIMEOUT_S + 1.0  # a 'sending' claim older than this was abandoned
CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS notify_sync (
    event_id   text PRIMARY KEY,
    state      text NOT NULL CHECK (state IN ('sending', 'delivered')),
    updated_at timestamptz NOT NULL DEFAULT now()
)
"""
CLAIM = f"""
INSERT INTO notify_sync (event_id, state) VALUES (%s, 'sending')
ON CONFLICT (event_id) DO UPDATE SET updated_at = now()
    WHERE notify_sync.state = 'sending'
      AND notify_sync.updated_at < now() - interval '{LEASE_S} seconds'
RETURNING 1
"""


class Unavailable(Exception):
    """The event cannot be delivered within the deadline: answer 503."""


class SyncDelivery:
    def __init__(self, pool: AsyncConnectionPool, provider: contract.ProviderClient) -> None:
        self.pool = pool
        self.provider = provider

    async def ensure_schema(self) -> None:
        while True:
            try:
                async with self.pool.connection() as conn:
                    await conn.execute(CREATE_TABLE)
                return
            except (psycopg.Error, PoolTimeout) as exc:
                warn_throttled("schema", f"cannot create the table yet: {type(exc).__name__}")
                await asyncio.sleep(0.5)

    async def execute(self, sql: str, *args: object) -> tuple[object, ...] | None:
        async with self.pool.connection() as conn:
            cur = await conn.execute(sql, args)
            return await cur.fetchone() if cur.description else None

    async def accept(self, event: contract.Event) -> web.Response:
        end = time.monotonic() + DEADLINE_S
        try:
            await self.settle(event, end)
        except Unavailable as exc:
            warn_throttled("accept", f"not accepted: {exc}")
            return json_error(503, "the notification could not be sent; retry")
        except (psycopg.Error, PoolTimeout) as exc:
            warn_throttled("accept", f"database unavailable: {type(exc).__name__}")
            return json_error(503, "database unavailable; retry")
        return contract.accepted()

    async def settle(self, event: contract.Event, end: float) -> None:
        """Return once the event is delivered (by us or a concurrent request); else raise.

        A claim left ``sending`` past :data:`LEASE_S` is taken over."""
        while time.monotonic() < end:
            if await self.execute(CLAIM, event.event_id):
                await self.deliver(event, end)
                return
            row = await self.execute(
                "SELECT state FROM notify_sync WHERE event_id = %s", event.event_id
            )
            if row is not None and row[0] == "delivered":
                return
            if row is not None:  # another request is sending it: wait for its outcome
                await asyncio.sleep(POLL_S)
        raise Unavailable("a concurrent request is still sending this event")

    async def deliver(self, event: contract.Event, end: float) -> None:
        """Attempt until delivered or out of time; on failure release the claim."""
        pause = 0.05
        try:
            while True:
                left = end - time.monotonic()
                attempt = await self.provider.send(event, max(ATTEMPT_TIMEOUT_S, left))
                if attempt.outcome is contract.Outcome.DELIVERED:
                    break
                if attempt.outcome is contract.Outcome.UNKNOWN:  # it may have been delivered
                    raise Unavailable(f"provider did not answer ({attempt.detail})")
                wait = (
                    attempt.retry_after_s
                    if attempt.outcome is contract.Outcome.THROTTLED
                    else pause
                )
                pause *= 2
                if time.monotonic() + wait >= end:
                    raise Unavailable(f"provider did not take it ({attempt.detail})")
                await asyncio.sleep(wait)
        except BaseException:
            await self.execute("DELETE FROM notify_sync WHERE event_id = %s", event.event_id)
            raise
        await self.execute(
            "UPDATE notify_sync SET state = 'delivered', updated_at = now() WHERE event_id = %s",
            event.event_id,
        )

    async def health(self) -> None:
        await self.execute("SELECT 1")


def build(env: Mapping[str, str]) -> web.Application:
    pool = AsyncConnectionPool(
        env["DATABASE_URL"],
        min_size=2,
        max_size=32,
        open=False,
        timeout=1.0,
        kwargs={"autocommit": True, "connect_timeout": 2},
        name="notify-sync",
    )
    provider = contract.ProviderClient(
        env["PROVIDER_URL"], env["PROVIDER_TOKEN"], connections=512, tls=tls_context(env)
    )
    design = SyncDelivery(pool, provider)
    app = contract.build_app(design.accept)
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
