"""A round-robin HTTP balancer: 127.0.0.1:<port> in front of web replicas' AF_UNIX sockets.

Every *request* goes to the next replica in turn, even on a keep-alive connection: a design
that keeps its state in process memory is then seen as the several replicas it really is
(a client reusing one connection would otherwise stay on one replica).

Failures follow nginx's defaults (https://nginx.org/en/docs/http/ngx_http_upstream_module.html#server
``max_fails=1 fail_timeout=10s``, and ``proxy_next_upstream error`` without
``non_idempotent``, https://nginx.org/en/docs/http/ngx_http_proxy_module.html#proxy_next_upstream):
a replica that fails to connect or drops the connection before answering is left out for
:data:`FAIL_TIMEOUT_S`; the request goes to the next replica when it was never sent, or when
its method is idempotent; otherwise, and when no replica answers, the client gets ``502``.

It runs as its own process (``python -m provisioning.hosted.balancer``, started by
:func:`start_balancer`) on uvloop, so that the grader's own event loop neither slows it nor is
slowed by it. Built on aiohttp's server and client (https://docs.aiohttp.org/).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web

HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Content-Length",
    )
)  # RFC 9110 §7.6.1; Content-Length is recomputed
UPSTREAM_TIMEOUT_S = 60.0
FAIL_TIMEOUT_S = 10.0
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"})  # RFC 9110 §9.2.2
START_TIMEOUT_S = 10.0


class BalancerError(RuntimeError):
    """The balancer could not start."""


def _forward_headers(headers: aiohttp.typedefs.LooseHeaders, peer: str | None) -> dict[str, str]:
    out = {k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP}  # type: ignore[union-attr]
    if peer:
        out["X-Forwarded-For"] = peer
    return out


def build_app(sockets: Sequence[Path]) -> web.Application:
    """The proxy application for ``sockets`` (one per replica), used in turn per request."""
    turn = itertools.cycle(range(len(sockets)))
    sessions: list[aiohttp.ClientSession] = []

    async def session_ctx(app: web.Application) -> object:
        for path in sockets:
            connector = aiohttp.UnixConnector(path=str(path), limit=0, force_close=False)
            sessions.append(
                aiohttp.ClientSession(
                    connector=connector,
                    auto_decompress=False,
                    timeout=aiohttp.ClientTimeout(total=UPSTREAM_TIMEOUT_S),
                    skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
                )
            )
        yield
        for s in sessions:
            await s.close()

    down_until = [0.0] * len(sockets)

    def order() -> list[int]:
        """Replicas to try: the next in turn first, those left out (failed lately) last."""
        start = next(turn)
        ring = [(start + i) % len(sockets) for i in range(len(sockets))]
        now = time.monotonic()
        return [i for i in ring if down_until[i] <= now] + [i for i in ring if down_until[i] > now]

    async def proxy(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = _forward_headers(request.headers, request.remote)
        retry_sent = request.method.upper() in IDEMPOTENT
        failure = "no replica answered"
        for i in order():
            try:
                async with sessions[i].request(
                    request.method,
                    f"http://{request.host or 'localhost'}{request.rel_url}",
                    headers=headers,
                    data=body if body else None,
                    allow_redirects=False,
                ) as upstream:
                    payload = await upstream.read()
                    out_headers = {
                        k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP
                    }
                    return web.Response(status=upstream.status, headers=out_headers, body=payload)
            except (aiohttp.ClientConnectorError, ConnectionRefusedError, FileNotFoundError):
                down_until[i] = time.monotonic() + FAIL_TIMEOUT_S
                continue  # not sent: the next replica may take it
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                down_until[i] = time.monotonic() + FAIL_TIMEOUT_S
                failure = f"replica {i} dropped the connection ({type(exc).__name__})"
                if retry_sent:
                    continue
                break
            except (aiohttp.ClientError, TimeoutError) as exc:
                failure = f"replica {i}: {type(exc).__name__}"
                break
        return web.Response(status=502, text=f"bad gateway: {failure}\n")

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.cleanup_ctx.append(session_ctx)
    app.router.add_route("*", "/{tail:.*}", proxy)
    return app


async def serve(port: int, sockets: Sequence[Path], ready: asyncio.Event | None = None) -> None:
    """Serve until cancelled (or SIGTERM); print ``listening <port>`` once bound."""
    runner = web.AppRunner(build_app(sockets), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024, reuse_address=True)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"listening {bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


@dataclass
class Balancer:
    """A running balancer process; ``url`` is what gets graded."""

    proc: asyncio.subprocess.Process
    port: int
    drain: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        """Terminate the process (SIGTERM, then SIGKILL after 5 s); idempotent."""
        if self.proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.terminate()
        try:
            await asyncio.wait_for(self.proc.wait(), 5.0)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()


async def start_balancer(sockets: Sequence[Path], port: int = 0) -> Balancer:
    """Start a balancer process in front of ``sockets`` on 127.0.0.1:``port`` (0: a free port).

    Raises :class:`BalancerError` when it does not report its port within 10 s.
    """
    if not sockets:
        raise BalancerError("no replica to balance")
    args = [sys.executable, "-m", __name__, "--port", str(port)]
    for path in sockets:
        args += ["--backend", str(path)]
    proc = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    seen: list[str] = []
    try:
        async with asyncio.timeout(START_TIMEOUT_S):
            while line := (await proc.stdout.readline()).decode(errors="replace"):
                seen.append(line.rstrip())
                if line.startswith("listening "):
                    drain = asyncio.get_running_loop().create_task(_drain(proc.stdout))
                    return Balancer(proc, int(line.split()[1]), drain)
    except TimeoutError:
        pass
    await Balancer(proc, 0).stop()
    raise BalancerError("the balancer did not start: " + " / ".join(seen[-5:]))


async def _drain(stream: asyncio.StreamReader) -> None:
    with contextlib.suppress(Exception):
        while await stream.read(1 << 16):
            pass


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--backend", type=Path, action="append", required=True)
    args = parser.parse_args(argv)
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover - uvloop is a dependency
        runner = asyncio.Runner()
    with runner:
        runner.run(serve(args.port, args.backend))


if __name__ == "__main__":
    main()
