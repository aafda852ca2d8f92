"""The HTTP/1.1 wire protocol of the load generator: requests encoded to bytes, and one
keep-alive connection (an :class:`asyncio.Protocol` with httptools' parser) carrying at most
one request at a time (RFC 9112, https://www.rfc-editor.org/rfc/rfc9112)."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import httptools

from grading.load.plan import Request

if TYPE_CHECKING:
    from grading.load.run import Run
    from grading.urlguard import Target

BODY_CAP = 64 * 1024
USER_AGENT = "cruscible-load/0.1"


def encode_request(req: Request, target: Target) -> bytes:
    """The request as HTTP/1.1 bytes, with Host, User-Agent and Content-Length filled in.

    ``req.path`` is relative to the target's base path; an empty one is the target's URL
    itself (``cruscible load http://host/healthz``)."""
    path = target.base_path + req.path if req.path else target.base_path or "/"
    parts = [req.method, path, *(x for h in req.headers for x in h)]
    if any(c in p for p in parts for c in "\r\n") or " " in req.method + path:
        raise ValueError(f"request line or headers contain whitespace or CR/LF: {req!r}")
    names = {n.lower() for n, _ in req.headers}
    lines = [f"{req.method} {path} HTTP/1.1"]
    if "host" not in names:
        lines.append(f"Host: {target.host_header}")
    if "user-agent" not in names:
        lines.append(f"User-Agent: {USER_AGENT}")
    lines += [f"{n}: {v}" for n, v in req.headers]
    if "content-length" not in names and (req.body or req.method in ("POST", "PUT", "PATCH")):
        lines.append(f"Content-Length: {len(req.body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + req.body


# A request on its way: (index, request, encoded bytes, scheduled monotonic time).
Item = tuple[int, Request, bytes, float]


class Conn(asyncio.Protocol):
    """One keep-alive connection carrying at most one request at a time."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.active: Item | None = None
        self.sent_at = 0.0
        self.body: list[bytes] = []
        self.body_len = 0
        self.headers: dict[str, str] = {}
        self.framed = False  # Content-Length or Transfer-Encoding seen
        self.headers_done = False
        self.closed = False

    def send(self, item: Item) -> None:
        self.active = item
        self.body = []
        self.body_len = 0
        self.headers = {}
        self.framed = self.headers_done = False
        self.sent_at = time.monotonic()
        assert self.transport is not None
        self.transport.write(item[2])

    # -- asyncio callbacks ------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.active is None:
            self.run.drop(self)  # unsolicited bytes: the connection is not usable
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.run.fail(self, "bad_response")

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.active is not None:
            if self.headers_done and not self.framed:  # body delimited by the close
                self.run.complete(self, self.parser.get_status_code(), False)
            else:
                self.run.fail(self, "reset")
        self.run.drop(self)

    # -- httptools callbacks ------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        n = name.lower()
        if n == b"content-length" or n == b"transfer-encoding":
            self.framed = True
        if self.run.want_body:
            self.headers[n.decode("latin-1")] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.headers_done = True
        if self.active is not None and self.active[1].method == "HEAD":
            # no body follows, but the parser cannot be told: answer now, then drop the connection
            self.run.complete(self, self.parser.get_status_code(), False)

    def on_body(self, body: bytes) -> None:
        if self.run.want_body and self.body_len < BODY_CAP:
            self.body.append(body)
            self.body_len += len(body)

    def on_message_complete(self) -> None:
        if self.active is not None:
            parser = self.parser
            self.run.complete(self, parser.get_status_code(), parser.should_keep_alive())
