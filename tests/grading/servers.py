"""Test servers on 127.0.0.1 (ephemeral ports) for the HTTP client and the load generator.

``serve_app()`` runs the aiohttp app in the test's own event loop; ``app_process()`` runs
the same app in a child process (so a load test does not share a CPU with it);
``raw_server()`` runs a raw asyncio server for misbehaving peers (garbage, closing).

Run as a program, it serves the app and prints its port on the first line.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

from aiohttp import web

HOST = "127.0.0.1"


class State:
    """Mutable knobs of the app: an injected stall and a health check that starts failing."""

    def __init__(self) -> None:
        self.stall_from = 0.0  # time.monotonic() instants (shared by processes on Linux)
        self.stall_until = 0.0
        self.unhealthy_calls = 0
        self.in_flight = 0  # concurrent /slow requests, and the most ever seen
        self.max_in_flight = 0


def make_app(state: State | None = None) -> web.Application:
    state = state or State()

    async def fast(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def work(_request: web.Request) -> web.Response:
        now = time.monotonic()
        if state.stall_from <= now < state.stall_until:  # a pause: everything waits it out
            await asyncio.sleep(state.stall_until - now)
        return web.Response(text="done")

    async def slow(request: web.Request) -> web.Response:
        state.in_flight += 1
        state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            await asyncio.sleep(float(request.query.get("ms", "100")) / 1000)
        finally:
            state.in_flight -= 1
        return web.Response(text="slow")

    async def stats(_request: web.Request) -> web.Response:
        data = {"in_flight": state.in_flight, "max_in_flight": state.max_in_flight}
        state.max_in_flight = state.in_flight
        return web.json_response(data)

    async def status(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]), text="status")

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response(
            {
                "method": request.method,
                "path": request.path_qs,
                "host": request.host,
                "headers": dict(request.headers),
                "body": body.decode("utf-8", "replace"),
            }
        )

    async def healthz(_request: web.Request) -> web.Response:
        if state.unhealthy_calls > 0:
            state.unhealthy_calls -= 1
            return web.Response(status=503, text="starting")
        return web.json_response({"ok": True})

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query.get("to", "http://10.0.0.1/"))

    async def stall(request: web.Request) -> web.Response:
        state.stall_from = float(request.query["at"])
        state.stall_until = state.stall_from + float(request.query["ms"]) / 1000
        return web.Response(text="armed")

    async def not_json(_request: web.Request) -> web.Response:
        return web.Response(text="<html>oops</html>", content_type="text/html")

    app = web.Application()
    app.router.add_route("*", "/fast", fast)
    app.router.add_route("*", "/work", work)
    app.router.add_get("/slow", slow)
    app.router.add_route("*", "/status/{code}", status)
    app.router.add_route("*", "/echo", echo)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/redirect", redirect)
    app.router.add_post("/_control/stall", stall)
    app.router.add_get("/_control/stats", stats)
    app.router.add_get("/not-json", not_json)
    return app


@contextlib.asynccontextmanager
async def serve_app(state: State | None = None) -> AsyncIterator[str]:
    """Serve the app in this event loop; yields its base URL."""
    runner = web.AppRunner(make_app(state), access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, HOST, 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://{HOST}:{port}"
    finally:
        await runner.cleanup()


@contextlib.contextmanager
def app_process() -> Iterator[str]:
    """Serve the app from a child process; yields its base URL."""
    proc = subprocess.Popen(
        [sys.executable, __file__], stdout=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.strip().isdigit():
            raise RuntimeError(f"test server did not start: {line!r}")
        yield f"http://{HOST}:{int(line)}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer every request with bytes that are not HTTP."""
    with contextlib.suppress(ConnectionError):
        while await reader.read(65536):
            writer.write(b"\x00\xffTHIS IS NOT HTTP\r\n\r\n")
            await writer.drain()
    writer.close()


async def close_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read the request, then close without answering."""
    with contextlib.suppress(ConnectionError):
        await reader.read(65536)
    writer.close()


async def half_response(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Start a response with a Content-Length, then close halfway through the body."""
    with contextlib.suppress(ConnectionError):
        await reader.read(65536)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhalf")
        await writer.drain()
    writer.close()


async def eof_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """An HTTP/1.0-style response whose body ends when the connection closes."""
    with contextlib.suppress(ConnectionError):
        await reader.read(65536)
        writer.write(b"HTTP/1.0 200 OK\r\n\r\nuntil close")
        await writer.drain()
    writer.close()


@contextlib.asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[str]:
    """A raw TCP server on 127.0.0.1 running ``handler`` per connection; yields its base URL."""
    server = await asyncio.start_server(handler, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://{HOST}:{port}"
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2)


async def _serve_forever() -> None:
    runner = web.AppRunner(make_app(), access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, HOST, 0, backlog=1024)
    await site.start()
    print(site._server.sockets[0].getsockname()[1], flush=True)  # type: ignore[union-attr]
    await asyncio.Event().wait()


if __name__ == "__main__":
    import uvloop

    uvloop.run(_serve_forever())
