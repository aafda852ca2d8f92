"""The durable hand-off through NATS JetStream, shared by the queue-based designs.

``Stream.publish`` stores an event in a file-backed work-queue stream with header
``Nats-Msg-Id: <event_id>``: JetStream drops a second publish of the same id within
its duplicate window (:data:`DUPLICATE_WINDOW_S`), so a client's resend is stored once.
The server answers only once the message is stored, so a 202 after it is a promise
that survives a crash of the service. While the queue is away (a restart) the publish
is retried until ``deadline_s``; past it the caller answers 503.

``Stream.consume`` hands each message to a handler, at most ``concurrency`` at a
time; what the handler does with the message (ack, nak with a delay) is the design's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Awaitable, Callable

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType

from challenges.service import StoreUnavailable, warn_throttled

log = logging.getLogger(__name__)

STREAM = "NOTIFY"
SUBJECT = "notify.events"
DUPLICATE_WINDOW_S = 300.0
ACK_WAIT_S = 30.0
RETRY_PAUSE_S = 0.05


async def _quiet(exc: Exception) -> None:
    warn_throttled("nats", f"queue connection: {type(exc).__name__}: {exc}")


class Stream:
    def __init__(self, url: str, consumer: str, tls: ssl.SSLContext | None = None) -> None:
        self.url = url
        self.tls = tls  # for a tls:// URL (challenges.service.tls_context)
        self.consumer = consumer
        self.nc: NATS | None = None
        self.ready = asyncio.Event()

    async def connect(self) -> None:
        """Connect (reconnecting forever, quickly) and create the stream, retrying until done."""
        self.nc = await nats.connect(
            self.url,
            tls=self.tls,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.1,
            error_cb=_quiet,
        )
        js = self.nc.jetstream(timeout=2.0)
        while True:
            try:
                await js.add_stream(
                    name=STREAM,
                    subjects=[SUBJECT],
                    storage=StorageType.FILE,
                    retention=RetentionPolicy.WORK_QUEUE,
                    duplicate_window=DUPLICATE_WINDOW_S,
                )
                self.ready.set()
                return
            except (NatsError, TimeoutError) as exc:
                warn_throttled("stream", f"cannot create the stream yet: {type(exc).__name__}")
                await asyncio.sleep(0.5)

    async def close(self) -> None:
        if self.nc is not None:
            with contextlib.suppress(NatsError, TimeoutError):
                await self.nc.close()

    async def publish(self, event_id: str, payload: bytes, deadline_s: float) -> None:
        """Store ``payload`` once per ``event_id``; raise StoreUnavailable past the deadline."""
        if self.nc is None or not self.ready.is_set():
            raise StoreUnavailable("queue not ready")
        js = self.nc.jetstream()
        end = time.monotonic() + deadline_s
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise StoreUnavailable("queue did not store the event in time")
            try:
                await js.publish(SUBJECT, payload, timeout=left, headers={"Nats-Msg-Id": event_id})
                return
            except (NatsError, TimeoutError) as exc:
                warn_throttled("publish", f"publish failed, retrying: {type(exc).__name__}")
                await asyncio.sleep(min(RETRY_PAUSE_S, max(0.0, end - time.monotonic())))

    async def consume(self, handle: Callable[[Msg], Awaitable[None]], *, concurrency: int) -> None:
        """Fetch messages forever; run ``handle`` on each, at most ``concurrency`` at once."""
        await self.ready.wait()
        assert self.nc is not None
        js = self.nc.jetstream(timeout=2.0)
        config = ConsumerConfig(
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=ACK_WAIT_S,
            max_deliver=-1,
            max_ack_pending=50_000,
        )
        while True:
            try:
                sub = await js.pull_subscribe(
                    SUBJECT, durable=self.consumer, stream=STREAM, config=config
                )
                break
            except (NatsError, TimeoutError) as exc:
                warn_throttled("consumer", f"cannot create the consumer yet: {type(exc).__name__}")
                await asyncio.sleep(0.5)
        tasks: set[asyncio.Task[None]] = set()

        async def run(msg: Msg) -> None:
            try:
                await handle(msg)
            except Exception:
                log.exception("handler failed; the message will be redelivered")

        while True:
            free = concurrency - len(tasks)
            if free <= 0:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                msgs = await sub.fetch(batch=min(free, 64), timeout=0.5)
            except TimeoutError:
                continue
            except NatsError as exc:
                warn_throttled("fetch", f"fetch failed: {type(exc).__name__}")
                await asyncio.sleep(0.1)
                continue
            for msg in msgs:
                task = asyncio.create_task(run(msg))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
