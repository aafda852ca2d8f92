"""File pipeline, reference design "store_first": keep the original, then process it from a queue.

Stores: S3 (the originals), PostgreSQL (status and results), NATS JetStream (the
work queue).

``POST /v1/uploads`` does the least that makes the upload safe: it writes the
body to S3 under ``uploads/{id}``, inserts a ``pending`` row, publishes the id on
the ``UPLOADS`` stream and answers ``202``. The body is buffered in memory (at
most 20 MB) and sent with one ``PUT``. If S3 or PostgreSQL refuses, the answer
is ``503`` and nothing was accepted.

A worker in the same process pulls ids from a durable JetStream consumer, marks
the row ``processing``, reads the original back from S3, parses it in a thread
and writes ``done`` or ``failed``; only then does it acknowledge the message. A
job that fails on a store is negatively acknowledged and redelivered a second
later; the final ``UPDATE`` only moves a row out of ``pending``/``processing``,
so a redelivered job cannot overwrite a verdict.

The pending row is the outbox: a publish may fail (NATS restarting) after the
row was inserted, and the upload is still acknowledged. A sweeper re-publishes
rows left ``pending`` for more than :data:`STALE_AFTER_S`; the message id
(``Nats-Msg-Id`` = the upload id) lets JetStream drop the copy when the first
publish did arrive. The stream is file-backed, so queued jobs survive a restart
of NATS.

What it buys: acknowledging a 20 MB upload costs a copy to S3, not its
processing; bursts queue up instead of competing for CPU in requests; a worker
that dies loses nothing (the message is redelivered after its ack wait); more
workers can be added without touching the API.

The price: three stores to run instead of two, an outbox and a sweeper to get
right, and results that arrive *after* the acknowledgement — clients poll (or
are called back), and a slow worker or a queue outage shows as ``pending``
uploads rather than failed requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Mapping

import nats
from aiohttp import web
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import Error as JetStreamError

from challenges.service import StoreUnavailable, add_health_check, run, tls_context, warn_throttled

from .. import contract
from ..stores import Bucket, Table

NAME = "file-pipeline/store_first"
STREAM = "UPLOADS"
SUBJECT = "uploads.process"
DURABLE = "workers"
WORKERS = 2  # jobs processed at once
PUBLISH_TIMEOUT_S = 1.0
RETRY_DELAY_S = 1.0
ACK_WAIT_S = 30.0
SWEEP_EVERY_S = 1.0
STALE_AFTER_S = 2.0
PROCESSING = "UPDATE uploads SET status = 'processing', updated_at = now() WHERE id = %s AND status = 'pending'"
STALE = f"""
SELECT id FROM uploads
WHERE status = 'pending' AND updated_at < now() - interval '{STALE_AFTER_S:g} seconds'
ORDER BY updated_at LIMIT 200
"""
TOUCH = "UPDATE uploads SET updated_at = now() WHERE id = ANY(%s) AND status = 'pending'"


async def _quiet(_: Exception) -> None:
    """nats-py logs every reconnect attempt unless given a callback."""


class StoreFirst:
    def __init__(
        self, table: Table, bucket: Bucket, nats_url: str, tls: ssl.SSLContext | None = None
    ) -> None:
        self.tls = tls  # for a tls:// URL (challenges.service.tls_context)
        self.table = table
        self.bucket = bucket
        self.nats_url = nats_url
        self.nc: nats.NATS | None = None

    # -- the API ------------------------------------------------------------------------
    async def accept(self, data: bytes) -> contract.Upload:
        upload_id = contract.new_id()
        await self.bucket.put(upload_id, data)
        await self.table.insert(upload_id, len(data), ("pending", None, None, None, None))
        await self.publish(upload_id)
        return contract.Upload(upload_id, "pending")

    async def get(self, upload_id: str) -> contract.Upload | None:
        return await self.table.get(upload_id)

    async def publish(self, upload_id: str) -> bool:
        """Queue the job; False (the sweeper will retry) when NATS cannot take it now."""
        nc = self.nc
        if nc is None or not nc.is_connected:
            return False
        try:
            await nc.jetstream().publish(
                SUBJECT,
                upload_id.encode(),
                timeout=PUBLISH_TIMEOUT_S,
                headers={"Nats-Msg-Id": upload_id},
            )
        except (NatsError, JetStreamError, OSError) as exc:
            warn_throttled("publish", f"publish deferred: {type(exc).__name__}")
            return False
        return True

    # -- the worker ---------------------------------------------------------------------
    async def process(self, upload_id: str) -> None:
        upload = await self.table.get(upload_id)
        if upload is None or upload.status in ("done", "failed"):
            return  # a duplicate job
        await self.table.execute(PROCESSING, (upload_id,))
        data = await self.bucket.get(upload_id)
        try:
            result, error = await asyncio.to_thread(contract.process, data), None
        except contract.Malformed as exc:
            result, error = None, str(exc)
        await self.table.finish(upload_id, result, error)

    async def handle(self, msg: Msg) -> None:
        try:
            await self.process(msg.data.decode())
        except (StoreUnavailable, OSError) as exc:
            warn_throttled("job", f"job retried: {type(exc).__name__}: {exc}")
            with contextlib.suppress(NatsError, JetStreamError):
                await msg.nak(delay=RETRY_DELAY_S)
            return
        # If this ack is lost the job is redelivered and found finished: harmless.
        with contextlib.suppress(NatsError, JetStreamError):
            await msg.ack()

    async def work_forever(self) -> None:
        sub = None
        while True:
            try:
                if sub is None:
                    assert self.nc is not None
                    sub = await self.nc.jetstream().pull_subscribe(
                        SUBJECT,
                        durable=DURABLE,
                        stream=STREAM,
                        config=ConsumerConfig(
                            ack_policy=AckPolicy.EXPLICIT, ack_wait=ACK_WAIT_S, max_deliver=-1
                        ),
                    )
                msgs = await sub.fetch(batch=WORKERS, timeout=1.0)
            except NatsTimeoutError:
                continue  # nothing to do
            except (NatsError, JetStreamError, OSError) as exc:
                warn_throttled("fetch", f"queue unavailable: {type(exc).__name__}")
                await asyncio.sleep(0.5)
                continue
            await asyncio.gather(*(self.handle(m) for m in msgs))

    async def sweep_forever(self) -> None:
        """Re-publish uploads left pending: their publish failed, or never happened."""
        while True:
            await asyncio.sleep(SWEEP_EVERY_S)
            try:
                stale = [row["id"] for row in await self.table.execute(STALE)]
                sent = [upload_id for upload_id in stale if await self.publish(upload_id)]
                if sent:
                    await self.table.execute(TOUCH, (sent,))
            except (StoreUnavailable, OSError) as exc:
                warn_throttled("sweep", f"sweep skipped: {type(exc).__name__}")

    # -- lifecycle ----------------------------------------------------------------------
    async def connect(self) -> None:
        """Connect to NATS and declare the stream, retrying until both succeed."""
        while True:
            try:
                if self.nc is None:
                    self.nc = await nats.connect(
                        self.nats_url,
                        tls=self.tls,
                        connect_timeout=2,
                        reconnect_time_wait=0.5,
                        max_reconnect_attempts=-1,
                        error_cb=_quiet,
                    )
                await self.nc.jetstream().add_stream(
                    StreamConfig(
                        name=STREAM,
                        subjects=[SUBJECT],
                        retention=RetentionPolicy.WORK_QUEUE,
                        storage=StorageType.FILE,
                        duplicate_window=120.0,
                    )
                )
                return
            except (NatsError, JetStreamError, OSError) as exc:
                warn_throttled("connect", f"queue not ready: {type(exc).__name__}: {exc}")
                await asyncio.sleep(0.5)

    async def lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        async def start() -> None:
            await self.connect()
            await asyncio.gather(self.work_forever(), self.sweep_forever())

        task = asyncio.create_task(start())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if self.nc is not None:
            with contextlib.suppress(NatsError, OSError):
                await self.nc.close()


def build(env: Mapping[str, str]) -> web.Application:
    table, bucket = Table(env["DATABASE_URL"]), Bucket(env)
    design = StoreFirst(table, bucket, env["NATS_URL"], tls_context(env))
    app = contract.build_app(design)
    add_health_check(app, "postgres", table.health)
    app.cleanup_ctx.append(table.lifecycle)
    app.cleanup_ctx.append(design.lifecycle)
    return app


def main() -> None:
    run(NAME, build, required_env=["DATABASE_URL", "S3_ENDPOINT_URL", "S3_BUCKET", "NATS_URL"])


if __name__ == "__main__":
    main()
