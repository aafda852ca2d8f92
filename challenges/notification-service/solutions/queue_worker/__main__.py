"""Notification service, reference design "queue_worker": store the event, answer 202, deliver later.

Ingest: ``POST /v1/events`` validates the event and publishes it to a file-backed
JetStream work queue (``NATS_URL``) with ``Nats-Msg-Id: <event_id>``, then answers
``202``. The answer waits only for the queue's acknowledgement (about a millisecond),
never for the provider: a slow, throttling or absent provider cannot touch the ingest
latency. A resend of the same event_id inside the stream's duplicate window is dropped
by JetStream itself, so it is stored once.

Delivery: a worker *process* (started and watched by the API process, as a second
deployment would be) pulls from a durable consumer and calls the provider, up to
:data:`CONCURRENCY` calls at once. Keeping it out of the API's event loop matters: a
batch of deliveries is milliseconds of CPU that would otherwise sit in front of the
next 202. It acknowledges a message only
*after* the provider answered 200 and the delivery was recorded in PostgreSQL
(``notify_delivered``, keyed by event_id). Anything else is a ``nak`` with a delay, and
JetStream delivers the message again: a 429 waits its ``Retry-After``, a 5xx or a
dropped connection backs off (0.25 s doubling, capped at 1 s: a provider outage of a
few seconds costs a few seconds of lag, not an event). Until acknowledged, the event
lives in the queue's files, so a restart of the worker or of the queue loses nothing.

Exactly one notification: before calling the provider the worker looks the event_id
up in ``notify_delivered``; a redelivered message (an ack lost in a queue restart, a
resend after the duplicate window) is acknowledged without a second call. Every
call carries the event_id as its ``idempotency_key``, which the provider honours (a
retry with the same key is answered from the first call, never sent twice), so a call
abandoned after :data:`SEND_TIMEOUT_S` can safely be tried again — also after a crash
between the provider's 200 and the record. ``SEND_TIMEOUT_S`` (seconds, from the
environment variable of that name; default 5) only trades waiting for retrying.

The price: more moving parts (a queue, a consumer, a table), and a 202 that no longer
means "delivered": the delivery lag is what the grader measures instead, and it grows
with the provider's outages. If the queue itself is away, the ingest retries its
publish for :data:`PUBLISH_DEADLINE_S`, then answers 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import AsyncIterator, Mapping

import psycopg
import uvloop
from aiohttp import web
from nats.aio.msg import Msg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from challenges.service import (
    StoreUnavailable,
    add_health_check,
    json_error,
    run,
    tls_context,
    warn_throttled,
)

from .. import contract
from ..stream import Stream

NAME = "notification-service/queue_worker"
PUBLISH_DEADLINE_S = 1.5
SEND_TIMEOUT_S = float(os.environ.get("SEND_TIMEOUT_S", "5"))
CONCURRENCY = 256
WORKER_FLAG = "--worker"
CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS notify_delivered (
    event_id     text PRIMARY KEY,
    delivered_at timestamptz NOT NULL DEFAULT now()
)
"""


def backoff_s(deliveries: int) -> float:
    """Wait before the next attempt: 0.25 s, 0.5 s, then 1 s."""
    return min(0.25 * 2 ** max(0, deliveries - 1), 1.0)


class Ingest:
    """The API process: publish, then answer."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream

    async def accept(self, event: contract.Event) -> web.Response:
        try:
            await self.stream.publish(event.event_id, event.to_json(), PUBLISH_DEADLINE_S)
        except StoreUnavailable as exc:
            warn_throttled("accept", f"not accepted: {exc}")
            return json_error(503, "cannot accept events right now; retry")
        return contract.accepted()


class Worker:
    """The worker process: one queue message at a time per task."""

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


async def work(env: Mapping[str, str]) -> None:
    """The worker process: deliver from the queue until killed."""
    stream = Stream(env["NATS_URL"], consumer="queue-worker", tls=tls_context(env))
    pool = AsyncConnectionPool(
        env["DATABASE_URL"],
        min_size=2,
        max_size=16,
        open=False,
        timeout=2.0,
        kwargs={"autocommit": True, "connect_timeout": 2},
        name="notify",
    )
    provider = contract.ProviderClient(
        env["PROVIDER_URL"], env["PROVIDER_TOKEN"], tls=tls_context(env)
    )
    worker = Worker(stream, pool, provider)
    await pool.open(wait=False)
    await provider.open()
    try:
        await asyncio.gather(stream.connect(), worker.ensure_schema())
        await stream.consume(worker.deliver, concurrency=CONCURRENCY)
    finally:
        await stream.close()
        await provider.close()
        await pool.close(timeout=1.0)


async def supervise(proc: list[asyncio.subprocess.Process]) -> None:
    """Run the worker process; start it again if it exits."""
    while True:
        proc[:] = [
            await asyncio.create_subprocess_exec(sys.executable, "-m", __package__, WORKER_FLAG)
        ]
        code = await proc[0].wait()
        warn_throttled("worker", f"worker process exited with {code}; starting it again")
        await asyncio.sleep(0.5)


def build(env: Mapping[str, str]) -> web.Application:
    stream = Stream(env["NATS_URL"], consumer="queue-worker", tls=tls_context(env))
    ingest = Ingest(stream)
    worker: list[asyncio.subprocess.Process] = []
    app = contract.build_app(ingest.accept)

    async def health() -> None:
        if not stream.ready.is_set():
            raise StoreUnavailable("queue not ready")
        if not worker or worker[0].returncode is not None:
            raise StoreUnavailable("worker not running")

    add_health_check(app, "queue+worker", health)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await stream.connect()
        supervisor = asyncio.create_task(supervise(worker))
        yield
        supervisor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await supervisor
        if worker and worker[0].returncode is None:
            worker[0].terminate()
            await worker[0].wait()
        await stream.close()

    app.cleanup_ctx.append(lifecycle)
    return app


def main() -> None:
    if WORKER_FLAG in sys.argv[1:]:
        logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s worker: %(message)s")
        uvloop.run(work(os.environ))
        return
    run(NAME, build, required_env=["NATS_URL", "DATABASE_URL", "PROVIDER_URL", "PROVIDER_TOKEN"])


if __name__ == "__main__":
    main()
