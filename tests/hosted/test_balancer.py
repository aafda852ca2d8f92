"""The balancer: per-request round robin over replicas' unix sockets, also on keep-alive."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from provisioning.hosted.balancer import Balancer, start_balancer


async def replica(path: Path, name: str) -> web.AppRunner:
    async def who(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response(
            {
                "replica": name,
                "path": request.path_qs,
                "body": body.decode(),
                "xff": request.headers.get("X-Forwarded-For"),
            },
            status=201 if request.method == "POST" else 200,
        )

    async def redirect(request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": "https://example.invalid/"})

    app = web.Application()
    app.router.add_get("/go", redirect)
    app.router.add_route("*", "/{tail:.*}", who)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.UnixSite(runner, str(path)).start()
    return runner


@pytest.fixture
async def balanced(tmp_path: Path) -> AsyncIterator[tuple[Balancer, list[Path]]]:
    paths = [tmp_path / f"in-web-{i}.sock" for i in range(3)]
    runners = [await replica(p, f"r{i}") for i, p in enumerate(paths)]
    balancer = await start_balancer(paths)
    yield balancer, paths
    await balancer.stop()
    for r in runners:
        await r.cleanup()


async def test_each_request_on_one_keep_alive_connection_goes_to_the_next_replica(
    balanced: tuple[Balancer, list[Path]],
) -> None:
    balancer, _ = balanced
    connector = aiohttp.TCPConnector(limit=1)  # one connection, reused for every request
    async with aiohttp.ClientSession(connector=connector) as http:
        seen = []
        for i in range(9):
            async with http.post(f"{balancer.url}/v1/check?i={i}", data=f"body{i}") as resp:
                assert resp.status == 201
                data = await resp.json()
                assert data["path"] == f"/v1/check?i={i}" and data["body"] == f"body{i}"
                assert data["xff"] == "127.0.0.1"
                seen.append(data["replica"])
        assert seen == ["r0", "r1", "r2"] * 3
        async with http.get(f"{balancer.url}/go", allow_redirects=False) as resp:
            assert resp.status == 302 and resp.headers["Location"] == "https://example.invalid/"


async def test_a_dead_replica_is_skipped_and_none_left_gives_502(tmp_path: Path) -> None:
    alive, dead = tmp_path / "a.sock", tmp_path / "dead.sock"
    runner = await replica(alive, "alive")
    balancer = await start_balancer([dead, alive])
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(4):
                async with http.get(f"{balancer.url}/") as resp:
                    assert resp.status == 200
                    assert (await resp.json())["replica"] == "alive"
            await runner.cleanup()
            async with http.get(f"{balancer.url}/") as resp:
                assert resp.status == 502
    finally:
        await balancer.stop()
    assert balancer.proc.returncode is not None


async def test_close_delimited_and_head_answers_pass_through(tmp_path: Path) -> None:
    """An HTTP/1.0-style replica (body ends at close, no Content-Length), and HEAD."""
    path = tmp_path / "old.sock"

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if head.startswith(b"HEAD"):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Kind: head\r\n\r\n")
        else:
            writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end")
        await writer.drain()
        writer.close()

    server = await asyncio.start_unix_server(handle, path=str(path))
    balancer = await start_balancer([path])
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(3):
                async with http.get(f"{balancer.url}/x") as resp:
                    assert resp.status == 200 and await resp.text() == "until the end"
            async with http.head(f"{balancer.url}/x") as resp:
                assert resp.status == 200 and resp.headers["X-Kind"] == "head"
    finally:
        await balancer.stop()
        server.close()
