"""The balancer's side towards one replica: HTTP/1.1 over its AF_UNIX socket, with idle
keep-alive connections reused, responses framed by httptools (the llhttp parser,
https://github.com/MagicStack/httptools). Leaner per request than a general-purpose client:
the balancer forwards thousands of requests a second on one core.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import httptools

READ_CHUNK = 1 << 16
MAX_CONNECTIONS = 96  # per replica, below the box's listen backlog (128): more requests queue


class NotSent(Exception):
    """The replica could not be reached: the request never left."""


class Dropped(Exception):
    """The replica closed the connection before a complete response (the request may have
    been seen)."""


@dataclass
class Answer:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    keep_alive: bool


@dataclass
class _Reading:
    head_only: bool
    parser: httptools.HttpResponseParser | None = None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: list[bytes] = field(default_factory=list)
    headers_done: bool = False
    keep_alive: bool = False
    done: bool = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.headers_done = True
        assert self.parser is not None
        self.keep_alive = self.parser.should_keep_alive()  # valid only inside the callbacks
        if self.head_only:
            self.done = True

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.done = True


class Upstream:
    """Connections to one replica's socket file."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.slots = asyncio.Semaphore(MAX_CONNECTIONS)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        for attempt in range(20):
            try:
                return await asyncio.open_unix_connection(self.path, limit=READ_CHUNK)
            except BlockingIOError:  # the backlog is full (unix(7): EAGAIN): wait, not fail
                await asyncio.sleep(0.005 * (attempt + 1))
            except OSError as exc:
                raise NotSent(str(exc)) from None
        raise NotSent("the replica's listen backlog stayed full")

    async def send(self, request: bytes, *, head: bool, timeout_s: float) -> Answer:
        """Send the serialized ``request``; raises :class:`NotSent`, :class:`Dropped` or
        ``TimeoutError``. At most :data:`MAX_CONNECTIONS` are open at once. A reused
        connection that turns out closed is retried on a new one (the keep-alive race: the
        replica closed it while idle)."""
        async with self.slots:
            return await self._send(request, head, timeout_s)

    async def _send(self, request: bytes, head: bool, timeout_s: float) -> Answer:
        while self.idle:
            reader, writer = self.idle.pop()
            if reader.at_eof() or writer.is_closing():
                writer.close()
                continue
            try:
                return await self._exchange(reader, writer, request, head, timeout_s, reused=True)
            except _Stale:
                continue
        reader, writer = await self._connect()
        try:
            return await self._exchange(reader, writer, request, head, timeout_s, reused=False)
        except _Stale:
            raise Dropped("the connection closed before an answer") from None

    async def _exchange(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        request: bytes,
        head: bool,
        timeout_s: float,
        *,
        reused: bool,
    ) -> Answer:
        state = _Reading(head_only=head)
        parser = state.parser = httptools.HttpResponseParser(state)
        received = False
        ok = False
        try:
            async with asyncio.timeout(timeout_s):
                writer.write(request)
                await writer.drain()
                while not state.done:
                    data = await reader.read(READ_CHUNK)
                    if not data:
                        if state.headers_done and not _framed(state.headers):
                            state.done = True  # HTTP/1.0 style: the body ends at close
                            break
                        raise _Stale() if not received else Dropped("closed mid-response")
                    received = True
                    parser.feed_data(data)
            answer = Answer(
                parser.get_status_code(),
                state.headers,
                b"".join(state.body),
                state.keep_alive and not head and _framed(state.headers),
            )
            ok = True
            return answer
        except (ConnectionError, OSError) as exc:
            if not received:
                raise _Stale() from None
            raise Dropped(str(exc)) from None
        except httptools.HttpParserError as exc:
            raise Dropped(f"not HTTP: {exc}") from None
        finally:
            if ok and answer.keep_alive:
                self.idle.append((reader, writer))
            else:
                writer.close()

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


class _Stale(Exception):
    """Closed before a byte of the answer."""


def _framed(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        low = name.lower()
        if low == b"content-length" or (low == b"transfer-encoding" and b"chunked" in value):
            return True
    return False
