"""Host-side byte relays between the box's socket files and host loopback ports."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
SUN_PATH_MAX = 107  # sockaddr_un.sun_path is 108 bytes including the NUL (unix(7))


def check_socket_path(path: Path) -> None:
    """``ValueError`` when ``path`` is too long to bind (unix(7): 108 bytes with the NUL)."""
    if len(os.fsencode(path)) > SUN_PATH_MAX:
        raise ValueError(
            f"socket path {path} is longer than {SUN_PATH_MAX} bytes (unix(7)); "
            "give the box a shorter root directory"
        )


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass


async def splice(
    a: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    b: tuple[asyncio.StreamReader, asyncio.StreamWriter],
) -> None:
    """Copy bytes both ways until both directions ended (half-close is passed on), then close."""
    try:
        await asyncio.gather(_pump(a[0], b[1]), _pump(b[0], a[1]))
    finally:
        for writer in (a[1], b[1]):
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def serve_forward(path: Path, port: int) -> asyncio.Server:
    """Listen on the socket file ``path`` (mode 0666, so the box user can connect) and relay
    each connection to host ``127.0.0.1:port``; a refused connect closes the box's side."""
    check_socket_path(path)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream = await asyncio.open_connection("127.0.0.1", port)
        except OSError as exc:
            log.debug("forward to 127.0.0.1:%d refused: %s", port, exc)
            writer.close()
            return
        await splice((reader, writer), upstream)

    server = await asyncio.start_unix_server(handle, path=str(path))
    os.chmod(path, 0o666)
    return server


async def open_inbound(path: Path) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to a box's inbound socket (see :meth:`Box.inbound`)."""
    return await asyncio.open_unix_connection(str(path))
