"""The host-side forward relay (socket file to a host loopback port), on its own: what a
server says first, half-closed requests, a refused port, and closing with open connections."""

from __future__ import annotations

import asyncio
from pathlib import Path

from provisioning.sandbox.relay import serve_forward


async def _server(greeting: bytes) -> tuple[asyncio.Server, int]:
    """A host server that greets first (like NATS's INFO), then reads to end of file and
    answers with what it read, upper-cased."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(greeting)
        await writer.drain()
        data = await reader.read()
        writer.write(data.upper())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_greeting_and_half_close_pass_through(tmp_path: Path) -> None:
    server, port = await _server(b"INFO hello\r\n")
    forward = await serve_forward(tmp_path / "out.sock", port)
    try:
        reader, writer = await asyncio.open_unix_connection(str(tmp_path / "out.sock"))
        assert await asyncio.wait_for(reader.readexactly(12), 10) == b"INFO hello\r\n"
        writer.write(b"ping " * 30000)  # more than one read and the write buffer's high mark
        writer.write_eof()
        answer = await asyncio.wait_for(reader.read(), 10)
        assert answer == b"PING " * 30000
        writer.close()
    finally:
        await forward.close()
        server.close()


async def test_refused_port_closes_the_box_side_and_close_ends_connections(
    tmp_path: Path,
) -> None:
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    free = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    refused = await serve_forward(tmp_path / "refused.sock", free)
    reader, writer = await asyncio.open_unix_connection(str(tmp_path / "refused.sock"))
    assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()
    await refused.close()

    server, port = await _server(b"hi")
    forward = await serve_forward(tmp_path / "open.sock", port)
    reader, writer = await asyncio.open_unix_connection(str(tmp_path / "open.sock"))
    assert await asyncio.wait_for(reader.readexactly(2), 10) == b"hi"
    await forward.close()  # the connection is still open: it ends with the forward
    assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()
    server.close()
