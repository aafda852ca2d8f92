"""Notification service, reference design "queue_worker": store the event, answer 202, deliver later.

Ingest: ``POST /v1/events`` validates the event and publishes it to a file-backed
JetStream work queue (``NATS_URL``) with ``Nats-Msg-Id: <event_id>``, then answers
``202``. The answer waits only for the queue's acknowledgement (about a millisecond),
never for the provider: a slow, throttling or absent provider cannot touch the ingest
latency. A resend of the same event_id inside the stream's duplicate window is dropped
by JetStream itself, so it is stored once.

Delivery: a worker in the same process pulls from a durable consumer and calls the
provider, up to :data:`CONCURRENCY` calls at once. It acknowledges a message only
*after* the provider answered 200 and the delivery was recorded in PostgreSQL
(``notify_delivered``, keyed by event_id). Anything else is a ``nak`` with a delay, and
JetStream delivers the message again: a 429 waits its ``Retry-After``, a 5xx or a
dropped connection backs off (0.25 s doubling, capped at 1 s: a provider outage of a
few seconds costs a few seconds of lag, not an event). Until acknowledged, the event
lives in the queue's files, so a restart of the worker or of the queue loses nothing.

Exactly one notification: before calling the provider the worker looks the event_id
up in ``notify_delivered``; a redelivered message (an ack lost in a queue restart, a
resend after the duplicate window) is acknowledged without a second call. The
provider's timeout is generous (:data:`SEND_TIMEOUT_S`, above any slow answer): a
call abandoned too early may still have been delivered, and trying again would notify
twice. The one gap left is a crash between the provider's 200 and the record — the
``idempotency_key`` exists so that the provider can drop that second call.

The price: more moving parts (a queue, a consumer, a table), and a 202 that no longer
means "delivered": the delivery lag is what the grader measures instead, and it grows
with the provider's outages. If the queue itself is away, the ingest retries its
publish for :data:`PUBLISH_DEADLINE_S`, then answers 503.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping

import psycopg
from aiohttp import web
from nats.aio.msg import Msg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from challenges.service import StoreUnavailable, add_health_check, json_error, run, warn_throttled

from .. import contract
from ..stream import Stream

NAME = "notification-service/queue_worker"
PUBLISH_DEADLINE_S = 1.5
SEND_TIMEOUT_S = 5.0
CONCURRENCY = 256
CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS notify_delivered (
    event_id     text PRIMARY KEY,
    delivered_at timestamptz NOT NULL DEFAULT now()
)
"""


def backoff_s(deliveries: int) -> float:
    """Wait before the next attempt: 0.25 s, 0.5 s, then 1 s."""
    return min(0.25 * 2 ** max(0, deliveries - 1), 1.0)


class Worker:
    def __init__(
        self, stream: Stream, pool: AsyncConnectionPool, provider: contract.ProviderClient
    ) -> None:
        self.stream = stream
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

    async def accept(self, event: contract.Event) -> web.Response:
        try:
            await self.stream.publish(event.event_id, event.to_json(), PUBLISH_DEADLINE_S)
        except StoreUnavailable as exc:
            warn_throttled("accept", f"not accepted: {exc}")
            return json_error(503, "cannot accept events right now; retry")
        return contract.accepted()

    async def already_delivered(self, event_id: str) -> bool:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT 1 FROM notify_delivered WHERE event_id = %s", (event_id,)
            )
            return await cur.fetchone() is not None

    async def record(self, event_id: str) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO notify_delivered (event_id) VALUES (%s) ON CONFLICT DO NOTHING",
                (event_id,),
            )

    async def deliver(self, msg: Msg) -> None:
        """One message: skip it if delivered, else one attempt; ack on success, else nak later."""
        event = contract.parse_event(msg.data)
        retry = backoff_s(msg.metadata.num_delivered)
        try:
            if await self.already_delivered(event.event_id):
                await msg.ack()
                return
        except (psycopg.Error, PoolTimeout) as exc:
            # Unsure whether it was delivered: wait rather than risk a second notification.
            warn_throttled("lookup", f"delivery record unavailable: {type(exc).__name__}")
            await msg.nak(delay=retry)
            return
        attempt = await self.provider.send(event, SEND_TIMEOUT_S)
        if attempt.outcome is contract.Outcome.DELIVERED:
            try:
                await self.record(event.event_id)
            except (psycopg.Error, PoolTimeout) as exc:
                warn_throttled("record", f"delivered but not recorded: {type(exc).__name__}")
            await msg.ack()
            return
        if attempt.outcome is contract.Outcome.THROTTLED:
            retry = max(retry, attempt.retry_after_s)
        warn_throttled("deliver", f"provider did not take an event ({attempt.detail}); retrying")
        await msg.nak(delay=retry)

    async def health(self) -> None:
        if not self.stream.ready.is_set():
            raise StoreUnavailable("queue not ready")
        async with self.pool.connection() as conn:
            await conn.execute("SELECT 1")


def build(env: Mapping[str, str]) -> web.Application:
    stream = Stream(env["NATS_URL"], consumer="queue-worker")
    pool = AsyncConnectionPool(
        env["DATABASE_URL"],
        min_size=2,
        max_size=16,
        open=False,
        timeout=2.0,
        kwargs={"autocommit": True, "connect_timeout": 2},
        name="notify",
    )
    provider = contract.ProviderClient(env["PROVIDER_URL"], env["PROVIDER_TOKEN"])
    worker = Worker(stream, pool, provider)
    app = contract.build_app(worker.accept)
    add_health_check(app, "stores", worker.health)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await pool.open(wait=False)
        await provider.open()
        await asyncio.gather(stream.connect(), worker.ensure_schema())
        consumer = asyncio.create_task(stream.consume(worker.deliver, concurrency=CONCURRENCY))
        yield
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer
        await stream.close()
        await provider.close()
        await pool.close(timeout=1.0)

    app.cleanup_ctx.append(lifecycle)
    return app


def main() -> None:
    run(
        NAME,
        build,
        required_env=["NATS_URL", "DATABASE_URL", "PROVIDER_URL", "PROVIDER_TOKEN"],
    )


if __name__ == "__main__":
    main()
