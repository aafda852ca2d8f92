"""Host-side byte relays between the box's socket files and host loopback ports."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from provisioning.sandbox.spec import SandboxError

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
SUN_PATH_MAX = 107  # sockaddr_un.sun_path is 108 bytes including the NUL (unix(7))


def check_socket_path(path: Path) -> None:
    """:class:`SandboxError` when ``path`` is too long to bind (unix(7): 108 bytes with the
    NUL: https://man7.org/linux/man-pages/man7/unix.7.html)."""
    if len(os.fsencode(path)) > SUN_PATH_MAX:
        raise SandboxError(
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


class Listener:
    """A unix-socket server whose open connections end with it (Python 3.11's
    ``Server.close`` leaves them running)."""

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def serve(
        self,
        path: Path,
        handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    ) -> None:
        """Listen on ``path`` (mode 0666: the box user connects) and run ``handler`` per
        connection."""
        check_socket_path(path)

        async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self._tasks.add(task)  # type: ignore[arg-type]
            try:
                await handler(reader, writer)
            finally:
                self._tasks.discard(task)  # type: ignore[arg-type]
                writer.close()

        self._server = await asyncio.start_unix_server(tracked, path=str(path))
        os.chmod(path, 0o666)

    async def close(self) -> None:
        """Stop listening and end every open connection."""
        if self._server is not None:
            self._server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def serve_forward(path: Path, port: int) -> Listener:
    """Listen on the socket file ``path`` and relay each connection to host
    ``127.0.0.1:port``; a refused connect closes the box's side."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream = await asyncio.open_connection("127.0.0.1", port)
        except OSError as exc:
            log.debug("forward to 127.0.0.1:%d refused: %s", port, exc)
            return
        await splice((reader, writer), upstream)

    listener = Listener()
    await listener.serve(path, handle)
    return listener


async def open_inbound(path: Path) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to a box's inbound socket (see :meth:`Box.inbound`)."""
    return await asyncio.open_unix_connection(str(path))
