"""Submissions built from a Dockerfile on the docker backend: built by the engine without
network or registry, run from their own image in a docker box (non-root, no capabilities,
read-only, loopback only), served through the balancer; refused on the local backend."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import docker
import pytest
from docker.errors import ImageNotFound, NotFound

from provisioning.environment import Environment
from provisioning.hosted.build import BuildError, build
from provisioning.hosted.manifest import load_manifest
from provisioning.hosted.service import start_service
from provisioning.sandbox import Limits, learner_image
from provisioning.sandbox.docker_box import LABEL_BOX, DockerBox
from tests.sandbox.support import listener
from tests.support.learner_base import ensure_base

WEB = r"""
import os
from http.server import BaseHTTPRequestHandler, HTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"{self.path} from {os.getuid()} in {os.getcwd()}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""

PROBE = r"""
import json, os, socket, time
status = dict(line.split(":\t", 1) for line in open("/proc/self/status").read().splitlines()
              if ":\t" in line)
out = {"uid": os.getuid(), "cap_eff": status["CapEff"].strip(),
       "no_new_privs": status["NoNewPrivs"].strip(), "cwd": os.getcwd(),
       "interfaces": sorted(name for _, name in socket.if_nameindex()),
       "bundle": os.environ.get("BUNDLE_VALUE"), "image_env": os.environ.get("FROM_IMAGE")}
try:
    open("/srv/planted", "w")
    out["image_write"] = "allowed"
except OSError as exc:
    out["image_write"] = type(exc).__name__
with open("/data/kept", "w") as f:
    f.write("ok")
out["volume"] = [line.split()[2] for line in open("/proc/self/mounts") if line.split()[1] == "/data"]
print("RESULT " + json.dumps(out), flush=True)
time.sleep(3600)
"""

MANIFEST = """[build]
dockerfile = "Dockerfile"

[processes.web]                # no command: the image's CMD
replicas = 2

[processes.probe]
command = "python3 probe.py"
"""


@pytest.fixture
def base(docker_engine: str) -> str:
    """The tag of a Python base image built here (nothing pulled)."""
    client = docker.from_env()
    try:
        return ensure_base(client)
    finally:
        client.close()


@pytest.fixture
def repo(workspace: Path) -> Path:
    """A learner's repository, ``app/`` of a world-searchable workspace."""
    return workspace / "app"


def _env(env_id: str) -> Environment:
    now = datetime.now(UTC)
    return Environment(env_id, "owner", "docker", "", now, now + timedelta(hours=1), resources={})


def _write(repo: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (repo / name).write_text(text)


async def _build(repo: Path, timeout_s: float = 120, limits: Limits | None = None) -> object:
    return await build(
        repo,
        load_manifest(repo),
        box_root=repo.parent / "b",
        cache_dir=repo.parent / "cache",
        limits=limits,
        timeout_s=timeout_s,
        backend="docker",
    )


async def test_a_dockerfile_submission_is_built_run_and_served(repo: Path, base: str) -> None:
    _write(
        repo,
        {
            "Dockerfile": (
                f"FROM {base}\nWORKDIR /srv\nCOPY main.py probe.py ./\nENV FROM_IMAGE=yes\n"
                'VOLUME /data\nCMD ["python3", "main.py"]\n'
            ),
            "main.py": WEB,
            "probe.py": PROBE,
            "cruscible.toml": MANIFEST,
        },
    )
    built = await _build(repo)
    log = (repo.parent / "b" / "logs" / "build-0.log").read_text()
    assert "Step 1/" in log and "Successfully built" in log, log
    client = docker.from_env()
    service = None
    volumes = {v.id for v in client.volumes.list()}
    try:
        image = client.images.get(learner_image.tag_for(repo))
        assert image.id == built.key  # type: ignore[attr-defined]
        manifest = load_manifest(repo)
        service = await start_service(
            repo,
            manifest,
            _env("env-dockerfile"),
            box_root=repo.parent / "r",
            limits=Limits(wall_s=120),
        )
        assert isinstance(service.box, DockerBox)
        assert service.box.isolation["image"] == image.id
        async with aiohttp.ClientSession() as http:
            for _ in range(2):
                async with http.get(f"{service.url}/healthz") as resp:
                    assert resp.status == 200
                    text = await resp.text()
                    assert text.startswith("/healthz from ") and text.endswith(" in /srv"), text
                    assert not text.startswith("/healthz from 0 ")
        result = None
        for _ in range(100):  # bounded: 10 s
            tail = service.box.log_tail("probe", 0, lines=20)
            if "RESULT " in tail:
                result = json.loads(tail.split("RESULT ", 1)[1].splitlines()[0])
                break
            await asyncio.sleep(0.1)
        assert result is not None, service.describe()
        assert result["uid"] != 0
        assert int(result["cap_eff"], 16) == 0
        assert result["no_new_privs"] == "1"
        assert result["cwd"] == "/srv"
        assert result["interfaces"] == ["lo"]
        assert result["image_env"] == "yes"
        assert result["image_write"] in ("OSError", "PermissionError")
        assert result["volume"] == ["tmpfs"]  # not a host volume outside the caps
        box_id = service.box.id
        labelled = client.containers.list(filters={"label": f"{LABEL_BOX}={box_id}"})
        attrs = labelled[0].attrs["HostConfig"]
        assert labelled[0].attrs["Image"] == image.id
        assert attrs["NetworkMode"] == "none"
        assert attrs["ReadonlyRootfs"] is True
        assert attrs["CapDrop"] == ["ALL"]
        assert attrs["SecurityOpt"] == ["no-new-privileges"]
        await service.stop()
        service = None
        assert {v.id for v in client.volumes.list()} == volumes
        shutil.rmtree(repo)  # the submission is cleaned up: its image goes at the next sweep
        learner_image.sweep(client)
        with pytest.raises(ImageNotFound):
            client.images.get(image.id)
    finally:
        if service is not None:
            await service.stop()
        client.close()


async def test_a_missing_base_image_is_named_and_nothing_is_pulled(
    repo: Path, docker_engine: str
) -> None:
    absent = "python:3.12-slim"
    client = docker.from_env()
    try:
        try:
            client.images.get(absent)
            pytest.skip(f"this engine has {absent}")
        except ImageNotFound:
            pass
        _write(
            repo,
            {
                "Dockerfile": f"FROM {absent}\nCOPY main.py /app/\n",
                "main.py": WEB,
                "cruscible.toml": MANIFEST,
            },
        )
        with pytest.raises(BuildError) as info:
            await _build(repo)
        message = str(info.value)
        assert message.startswith(
            f"cruscible.toml: build.dockerfile: the base image {absent} is not on this host, "
            "and nothing is pulled here"
        ), message
        with pytest.raises(ImageNotFound):
            client.images.get(absent)
    finally:
        client.close()


async def test_a_run_step_has_no_network(repo: Path, base: str) -> None:
    async with listener() as (port, seen):
        reach = (
            "import socket; print('interfaces', [n for _, n in socket.if_nameindex()], "
            f"flush=True); socket.create_connection(('127.0.0.1', {port}), timeout=5)"
        )
        _write(
            repo,
            {
                "Dockerfile": f'FROM {base}\nRUN ["python3", "-c", "{reach}"]\n',
                "main.py": WEB,
                "cruscible.toml": MANIFEST,
            },
        )
        with pytest.raises(BuildError) as info:
            await _build(repo)
        message = str(info.value)
        assert message.startswith("the build failed ("), message
        assert "interfaces ['lo']" in message
        assert "ConnectionRefusedError" in message
        assert seen == []
    client = docker.from_env()
    try:
        with pytest.raises(ImageNotFound):
            client.images.get(learner_image.tag_for(repo))
    finally:
        client.close()


async def test_a_build_that_never_ends_is_killed_at_its_wall_time(repo: Path, base: str) -> None:
    _write(
        repo,
        {
            "Dockerfile": f'FROM {base}\nRUN ["python3", "-c", "import time; time.sleep(600)"]\n',
            "main.py": WEB,
            "cruscible.toml": MANIFEST,
        },
    )
    with pytest.raises(BuildError, match=r"killed: wall time 3 s"):
        await _build(repo, timeout_s=3)
    log = (repo.parent / "b" / "logs" / "build-0.log").read_text()
    step = re.search(r"Running in ([0-9a-f]+)", log)
    assert step is not None, log
    client = docker.from_env()
    try:
        with pytest.raises(NotFound):
            client.containers.get(step.group(1))
    finally:
        client.close()


async def test_an_image_without_cmd_needs_a_command(repo: Path, base: str) -> None:
    _write(
        repo,
        {"Dockerfile": f"FROM {base}\n", "main.py": WEB, "cruscible.toml": MANIFEST},
    )
    with pytest.raises(BuildError) as info:
        await _build(repo)
    assert str(info.value) == (
        "cruscible.toml: processes.web.command: required, the image has neither CMD nor ENTRYPOINT"
    )


async def test_a_step_naming_another_container_cannot_get_it_killed(repo: Path, base: str) -> None:
    client = docker.from_env()
    bystander = client.containers.run(
        base,
        ["python3", "-c", "import time; time.sleep(120)"],
        network_mode="none",
        detach=True,
        remove=True,
    )
    try:
        fake = f"print('---> Running in {bystander.id}', flush=True); import time; time.sleep(600)"
        _write(
            repo,
            {
                "Dockerfile": f'FROM {base}\nRUN ["python3", "-c", "{fake}"]\n',
                "cruscible.toml": '[build]\ndockerfile = "Dockerfile"\n[processes.web]\ncommand = "x"\n',
            },
        )
        with pytest.raises(BuildError, match=r"killed: wall time 3 s"):
            await _build(repo, timeout_s=3)
        bystander.reload()
        assert bystander.status == "running"
    finally:
        with contextlib.suppress(NotFound):
            bystander.kill()
        client.close()
