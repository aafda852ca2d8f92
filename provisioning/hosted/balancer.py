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
slowed by it. Built on aiohttp's server (https://docs.aiohttp.org/) and, towards the replicas,
:mod:`provisioning.hosted.upstream` (keep-alive connections, httptools framing).
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

from aiohttp import web
from multidict import CIMultiDict

from provisioning.hosted.upstream import Answer, Dropped, NotSent, Upstream

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


def _request_bytes(request: web.Request, body: bytes) -> bytes:
    """``request`` as HTTP/1.1 bytes for a replica: hop-by-hop headers and ``Expect`` dropped
    (the body is already here: no ``100 Continue`` to wait for), the body's length set,
    ``X-Forwarded-For`` added."""
    lines = [f"{request.method} {request.raw_path} HTTP/1.1"]
    for name, value in request.headers.items():
        if name.lower() not in HOP_BY_HOP and name.lower() not in {"x-forwarded-for", "expect"}:
            lines.append(f"{name}: {value}")
    if "Host" not in request.headers:
        lines.append("Host: localhost")
    if body or request.method not in {"GET", "HEAD", "DELETE", "OPTIONS"}:
        lines.append(f"Content-Length: {len(body)}")
    if request.remote:
        lines.append(f"X-Forwarded-For: {request.remote}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _response(answer: Answer) -> web.Response:
    headers = CIMultiDict(
        (k.decode("latin-1"), v.decode("latin-1"))
        for k, v in answer.headers
        if k.decode("latin-1").lower() not in HOP_BY_HOP
    )
    return web.Response(status=answer.status, headers=headers, body=answer.body)


def build_app(sockets: Sequence[Path]) -> web.Application:
    """The proxy application for ``sockets`` (one per replica), used in turn per request."""
    turn = itertools.cycle(range(len(sockets)))
    upstreams = [Upstream(path) for path in sockets]
    down_until = [0.0] * len(sockets)

    async def close_upstreams(app: web.Application) -> None:
        for upstream in upstreams:
            upstream.close()

    def order() -> list[int]:
        """Replicas to try: the next in turn first, those left out (failed lately) last."""
        start = next(turn)
        ring = [(start + i) % len(sockets) for i in range(len(sockets))]
        now = time.monotonic()
        return [i for i in ring if down_until[i] <= now] + [i for i in ring if down_until[i] > now]

    async def proxy(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        raw = _request_bytes(request, body)
        head = request.method == "HEAD"
        retry_sent = request.method.upper() in IDEMPOTENT
        failure = "no replica answered"
        for i in order():
            try:
                answer = await upstreams[i].send(raw, head=head, timeout_s=UPSTREAM_TIMEOUT_S)
                return _response(answer)
            except NotSent as exc:
                down_until[i] = time.monotonic() + FAIL_TIMEOUT_S
                failure = f"replica {i} cannot be reached ({exc})"
                continue  # not sent: the next replica may take it
            except Dropped as exc:
                down_until[i] = time.monotonic() + FAIL_TIMEOUT_S
                failure = f"replica {i} dropped the connection ({exc})"
                if retry_sent:
                    continue
                break
            except TimeoutError:
                failure = f"replica {i} did not answer within {UPSTREAM_TIMEOUT_S:g} s"
                break
        return web.Response(status=502, text=f"bad gateway: {failure}\n")

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.on_cleanup.append(close_upstreams)
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
