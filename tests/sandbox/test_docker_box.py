"""Docker boxes: the learner's processes in a container with no network but loopback, a
read-only root, no capabilities, no_new_privs, and the pids and memory limits of the spec."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import docker
import pytest

from provisioning.environment import Environment
from provisioning.hosted.build import BuildError, build
from provisioning.hosted.manifest import parse_manifest
from provisioning.hosted.service import start_service
from provisioning.sandbox import Box, BoxSpec, Limits, ProcessSpec, box_class
from provisioning.sandbox.docker_box import LABEL_BOX, DockerBox, runtime_for
from tests.sandbox.support import listener, probe

PROBE = r"""
import json, os, socket, sys
forwarded, other = int(sys.argv[1]), int(sys.argv[2])
status = dict(line.split(":\t", 1) for line in open("/proc/self/status").read().splitlines()
              if ":\t" in line)
out = {"uid": os.getuid(), "cap_eff": status["CapEff"].strip(),
       "no_new_privs": status["NoNewPrivs"].strip(),
       "interfaces": sorted(name for _, name in socket.if_nameindex())}
try:
    open("/usr/planted", "w")
    out["root_write"] = "allowed"
except OSError as exc:
    out["root_write"] = type(exc).__name__
try:
    open("/planted", "w")
    out["top_write"] = "allowed"
except OSError as exc:
    out["top_write"] = type(exc).__name__
s = socket.create_connection(("127.0.0.1", forwarded), timeout=10)
s.sendall(b"through")
out["forwarded"] = s.recv(64).decode()
s.close()
try:
    socket.create_connection(("127.0.0.1", other), timeout=5).close()
    out["other"] = "reached"
except OSError as exc:
    out["other"] = type(exc).__name__
print("RESULT " + json.dumps(out), flush=True)
"""

WEB = r"""
import os, socket
server = socket.create_server(("127.0.0.1", int(os.environ["PORT"])))
while True:
    conn, _ = server.accept()
    conn.sendall(b"web saw " + conn.recv(64))
    conn.close()
"""

FORK_BOMB = r"""
import os, sys, time
children = 0
try:
    for _ in range(200):
        if os.fork() == 0:
            time.sleep(30)
            os._exit(0)
        children += 1
    print("all forked", children, flush=True)
except OSError as exc:
    print("refused after", children, type(exc).__name__, flush=True)
time.sleep(1)
"""

HOG = r"""
chunks = []
while True:
    chunks.append(bytearray(16 * 1024 * 1024))
"""


@pytest.fixture
async def docker_boxes(docker_engine: str) -> list[DockerBox]:  # type: ignore[misc]
    """Docker boxes a test started; all stopped (and removed) at the end."""
    started: list[DockerBox] = []
    yield started  # type: ignore[misc]
    await asyncio.gather(*(box.stop() for box in started))


async def _run(workspace: Path, boxes: list[DockerBox], name: str, spec: BoxSpec) -> DockerBox:
    box = await DockerBox.start(spec, workspace / name)
    boxes.append(box)
    return box


async def _ask(path: Path) -> bytes:
    for _ in range(100):  # until the replica listens (bounded: 10 s)
        try:
            reader, writer = await asyncio.open_unix_connection(str(path))
            writer.write(b"hello")
            answer = await reader.read()
            writer.close()
            if answer:
                return answer
        except OSError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"{path} never answered")


async def test_docker_box_is_contained(workspace: Path, docker_boxes: list[DockerBox]) -> None:
    async with listener() as (port, seen), listener() as (other, other_seen):
        command = probe(workspace, "probe.py", PROBE) + f" {port} {other}"
        probe(workspace, "web.py", WEB)
        spec = BoxSpec(
            workdir=workspace / "app",
            processes=(
                ProcessSpec("t", command),
                ProcessSpec("web", "python web.py", port=True),
            ),
            forwards=(port,),
            limits=Limits(wall_s=60),
        )
        box = await _run(workspace, docker_boxes, "b0", spec)
        assert box.isolation["net"] == "none (loopback only)"
        assert "runtime" in box.isolation
        assert await _ask(box.inbound("web", 0)) == b"web saw hello"
        for _ in range(200):  # bounded: 20 s
            if box.states()[0].running is False:
                break
            await asyncio.sleep(0.1)
        log = box.log_tail("t", lines=50)
        assert box.states()[0].reason == "exited 0", log
        result = json.loads(log.split("RESULT ", 1)[1].splitlines()[0])
        assert result["uid"] != 0
        assert int(result["cap_eff"], 16) == 0
        assert result["no_new_privs"] == "1"
        assert result["interfaces"] == ["lo"]
        assert result["root_write"] in ("OSError", "PermissionError")
        assert result["top_write"] in ("OSError", "PermissionError")
        assert result["forwarded"] == "through"
        assert result["other"] == "ConnectionRefusedError"
        assert seen == [b"through"] and other_seen == []
        client = docker.from_env()
        try:
            labelled = client.containers.list(all=True, filters={"label": f"{LABEL_BOX}={box.id}"})
            attrs = labelled[0].attrs["HostConfig"]
            assert attrs["NetworkMode"] == "none"
            assert attrs["ReadonlyRootfs"] is True
            assert attrs["CapDrop"] == ["ALL"]
            assert attrs["PidsLimit"] == spec.limits.pids
            assert attrs["Memory"] == attrs["MemorySwap"] == spec.limits.memory_mb * 1024 * 1024
            await box.stop()
            gone = client.containers.list(all=True, filters={"label": f"{LABEL_BOX}={box.id}"})
            assert gone == []
        finally:
            client.close()


async def test_docker_box_pids_limit_holds_a_fork_bomb(
    workspace: Path, docker_boxes: list[DockerBox]
) -> None:
    spec = BoxSpec(
        workdir=workspace / "app",
        processes=(ProcessSpec("t", probe(workspace, "bomb.py", FORK_BOMB)),),
        limits=Limits(wall_s=60, pids=32),
    )
    box = await _run(workspace, docker_boxes, "b0", spec)
    states = await box.wait(60)
    log = box.log_tail("t")
    assert "refused after" in log, log
    forked = int(log.split("refused after ", 1)[1].split()[0])
    assert forked < 32
    assert states[0].reason.endswith("(process limit 32 reached)"), states


async def test_docker_box_memory_limit_is_reported(
    workspace: Path, docker_boxes: list[DockerBox]
) -> None:
    spec = BoxSpec(
        workdir=workspace / "app",
        processes=(ProcessSpec("t", probe(workspace, "hog.py", HOG)),),
        limits=Limits(wall_s=60, memory_mb=96),
    )
    box = await _run(workspace, docker_boxes, "b0", spec)
    states = await box.wait(60)
    assert states[0].oom_killed, states
    assert states[0].reason == "killed: memory limit 96 MB"


HEALTH = r"""
import os
from http.server import BaseHTTPRequestHandler, HTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"{self.path} from {os.getuid()}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""


async def test_hosted_service_runs_in_a_docker_box_next_to_a_docker_environment(
    workspace: Path, docker_engine: str
) -> None:
    app = workspace / "app"
    probe(workspace, "main.py", HEALTH)
    manifest = parse_manifest('[processes.web]\ncommand = "python main.py"\n', app)
    now = datetime.now(UTC)
    env = Environment(
        "env-dockerbox", "owner", "docker", "", now, now + timedelta(hours=1), resources={}
    )
    service = await start_service(
        app, manifest, env, box_root=workspace / "b0", limits=Limits(wall_s=60)
    )
    try:
        assert isinstance(service.box, DockerBox)
        assert box_class("local") is Box
        async with aiohttp.ClientSession() as http, http.get(f"{service.url}/hello") as resp:
            assert resp.status == 200
            assert (await resp.text()).startswith("/hello from ")
    finally:
        await service.stop()


def test_runsc_only_when_it_can_reach_socket_files() -> None:
    assert runtime_for({"Runtimes": {"runc": {"path": "runc"}}})[0] is None
    without = {"Runtimes": {"runsc": {"path": "/usr/bin/runsc"}}}
    assert runtime_for(without) == (
        None,
        "runc (runsc is configured without --host-uds, needed for socket files)",
    )
    with_uds = {"Runtimes": {"runsc": {"path": "runsc", "runtimeArgs": ["--host-uds=all"]}}}
    assert runtime_for(with_uds) == ("runsc", "runsc (gVisor)")


async def test_a_dockerfile_build_is_refused_on_the_local_backend(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM python:3.11-slim\n")
    text = '[build]\ndockerfile = "Dockerfile"\n[processes.web]\ncommand = "python main.py"\n'
    manifest = parse_manifest(text, tmp_path)
    with pytest.raises(BuildError) as info:
        await build(
            tmp_path,
            manifest,
            box_root=tmp_path / "box",
            cache_dir=tmp_path / "cache",
            backend="local",
        )
    assert str(info.value).startswith(
        "cruscible.toml: build.dockerfile: a Dockerfile is built only where submissions run on "
        "the docker backend"
    )
    assert "CRUSCIBLE_BACKEND=docker" in str(info.value)
    assert not (tmp_path / "box").exists()  # refused before any box started


async def test_docker_box_meets_its_wall_time(
    workspace: Path, docker_boxes: list[DockerBox]
) -> None:
    spec = BoxSpec(
        workdir=workspace / "app",
        processes=(ProcessSpec("t", "sleep 60"),),
        limits=Limits(wall_s=2),
    )
    box = await _run(workspace, docker_boxes, "b0", spec)
    states = await box.wait(30)
    assert not states[0].running
    assert states[0].reason == "killed: wall time 2 s"
