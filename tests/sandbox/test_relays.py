"""Traffic in and out of a box: inbound sockets to each replica's $PORT, and the registry
proxy that lets a build reach the configured package index and nothing else."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import socket
import zipfile
from pathlib import Path

import pytest
from aiohttp import web

from provisioning.sandbox import Box, BoxSpec, Limits, ProcessSpec, registry
from tests.sandbox.support import listener, probe, run

WEB = r"""
import os, socket
port = int(os.environ["PORT"])
server = socket.create_server(("127.0.0.1", port))
print("listening", port, flush=True)
while True:
    conn, _ = server.accept()
    data = conn.recv(1024)
    conn.sendall(b"port=%d got=%s secret=%s" % (port, data, os.environ["SECRET"].encode()))
    conn.close()
"""


async def _ask(path: Path, payload: bytes) -> bytes:
    for _ in range(100):  # until the replica listens (bounded: 10 s)
        reader, writer = await asyncio.open_unix_connection(str(path))
        try:
            writer.write(payload)
            await writer.drain()
            answer = await reader.read()
        except ConnectionError:  # the relay found no listener yet and hung up
            answer = b""
        finally:
            writer.close()
        if answer:
            return answer
        await asyncio.sleep(0.1)
    raise AssertionError(f"{path} never answered")


async def test_inbound_reaches_each_replica(workspace: Path, boxes: list[Box]) -> None:
    probe(workspace, "web.py", WEB)
    spec = BoxSpec(
        workdir=workspace / "app",
        processes=(ProcessSpec("web", "python web.py", replicas=2, port=True),),
        env={"SECRET": "hunter2-very-secret", "RATE_LIMIT": "20"},
        secrets=("hunter2-very-secret",),
        limits=Limits(wall_s=60),
    )
    box = await Box.start(spec, workspace / "b0")
    boxes.append(box)
    answers = [await _ask(box.inbound("web", i), b"hello") for i in range(2)]
    ports = {a.split(b" ")[0] for a in answers}
    assert len(ports) == 2, answers  # distinct $PORT per replica
    assert all(b"got=hello secret=hunter2-very-secret" in a for a in answers)
    states = box.states()
    assert [(s.name, s.replica, s.running) for s in states] == [("web", 0, True), ("web", 1, True)]
    # Logs are the learner's; the bundle's values never show in what we return.
    with box.log_path("web", 0).open("a") as learner_log:
        learner_log.write("leak: hunter2-very-secret limit 20\n")
    tail = box.log_tail("web", 0)
    assert "listening" in tail and "hunter2" not in tail
    assert "leak: ••• limit 20" in tail
    with pytest.raises(KeyError):
        box.inbound("web", 2)
    await box.stop()
    assert [s.reason for s in box.states()] == ["stopped", "stopped"]


PROXY_PROBE = r"""
import os, socket
def ask(line):
    s = socket.create_connection(("127.0.0.1", 3128), timeout=10)
    s.sendall(line.encode() + b"\r\nHost: x\r\n\r\n")
    answer = s.recv(200).split(b"\r\n")[0].decode()
    s.close()
    return answer
print("proxy env", os.environ["HTTPS_PROXY"], os.environ["PIP_INDEX_URL"])
print("evil", ask("CONNECT evil.example.invalid:443 HTTP/1.1"))
print("plain", ask("GET http://evil.example.invalid/simple/ HTTP/1.1"))
"""


async def test_build_box_proxy_refuses_other_hosts(
    workspace: Path, boxes: list[Box], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIP_INDEX_URL", "https://pypi.org/simple")
    registry.host_registry.cache_clear()
    monkeypatch.setattr(registry, "host_registry", registry.host_registry.__wrapped__)
    box, state, log = await run(
        workspace, boxes, probe(workspace, "proxy.py", PROXY_PROBE), registry=True
    )
    assert state.reason == "exited 0", log
    assert "proxy env http://127.0.0.1:3128 https://pypi.org/simple" in log
    assert "evil HTTP/1.1 403 Forbidden" in log
    assert "plain HTTP/1.1 403 Forbidden" in log
    assert box.refused_hosts == ["evil.example.invalid:443", "evil.example.invalid:80"]


async def test_proxy_decides_before_resolving(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with listener() as (port, seen):
        proxy = registry.Proxy(frozenset({("127.0.0.1", port)}))
        path = workspace / "proxy.sock"
        await proxy.serve(path)
        loop = asyncio.get_running_loop()
        lookups: list[object] = []
        real = loop.getaddrinfo

        async def recording(*args: object, **kw: object) -> object:
            lookups.append(args[0])
            return await real(*args, **kw)  # type: ignore[arg-type]

        monkeypatch.setattr(loop, "getaddrinfo", recording)
        try:
            reader, writer = await asyncio.open_unix_connection(str(path))
            writer.write(b"CONNECT evil.example.invalid:443 HTTP/1.1\r\n\r\n")
            assert (await reader.read()).startswith(b"HTTP/1.1 403 Forbidden")
            writer.close()
            assert lookups == []  # refused without resolving the name
            reader, writer = await asyncio.open_unix_connection(str(path))
            writer.write(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n".encode())
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
            writer.write(b"through the tunnel")
            assert await reader.read() == b"through the tunnel"
            writer.close()
        finally:
            await proxy.close()
        assert seen == [b"through the tunnel"]
        assert proxy.refused == ["evil.example.invalid:443"]


def _wheel(name: str, version: str) -> tuple[str, bytes]:
    """A minimal pure-Python wheel (PEP 427) for ``name``."""
    module = name.replace("-", "_")
    dist = f"{module}-{version}.dist-info"
    files = {
        f"{module}/__init__.py": b"VALUE = 42\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = ("\n".join(record) + "\n").encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return f"{module}-{version}-py3-none-any.whl", buffer.getvalue()


@pytest.mark.slow
async def test_build_installs_from_the_configured_index_through_the_proxy(
    workspace: Path, boxes: list[Box], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A real package index on host loopback (PEP 503 simple API), configured as pip's index:
    # pip inside the build box reaches it only through the proxy.
    filename, wheel = _wheel("cruscible-probe", "1.0")
    app = web.Application()
    requests: list[str] = []

    async def page(request: web.Request) -> web.Response:
        requests.append(request.path)
        link = f'<a href="/files/{filename}">{filename}</a>'
        return web.Response(text=f"<html><body>{link}</body></html>", content_type="text/html")

    async def file(request: web.Request) -> web.Response:
        requests.append(request.path)
        return web.Response(body=wheel, content_type="application/octet-stream")

    app.router.add_get("/simple/cruscible-probe/", page)
    app.router.add_get(f"/files/{filename}", file)
    runner = web.AppRunner(app)
    await runner.setup()
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    site = web.SockSite(runner, sock)
    await site.start()
    monkeypatch.setenv("PIP_INDEX_URL", f"http://127.0.0.1:{port}/simple")
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    monkeypatch.setattr(registry, "_pip_config", dict)
    monkeypatch.setattr(registry, "host_registry", registry.host_registry.__wrapped__)
    (workspace / "app" / "requirements.txt").write_text("cruscible-probe==1.0\n")
    command = (
        "python -m venv .venv && .venv/bin/pip install --no-input -r requirements.txt"
        " && .venv/bin/python -c 'import cruscible_probe; print(\"value\", cruscible_probe.VALUE)'"
    )
    try:
        box, state, log = await run(
            workspace,
            boxes,
            command,
            limits=Limits(wall_s=120, memory_mb=512),
            timeout=120,
            registry=True,
            writable_app=True,
        )
    finally:
        await runner.cleanup()
    assert state.reason == "exited 0", log
    assert "value 42" in log
    assert requests == ["/simple/cruscible-probe/", f"/files/{filename}"]
    assert box.refused_hosts == []
    # The run box sees the build's venv, read-only.
    _box, state, log = await run(
        workspace, boxes, "python -c 'import cruscible_probe, sys; print(sys.prefix)'"
    )
    assert state.reason == "exited 0", log
    assert "/app/.venv" in log
