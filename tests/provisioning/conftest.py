"""Real servers for the provisioning tests: one data dir per session, shared environments."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from provisioning.backend import Backend
from provisioning.backends import make_backend
from provisioning.docker.backend import NETWORK_ENV
from provisioning.docker.containers import container_user
from provisioning.docker.engine import EngineUnavailable, ensure_engine
from provisioning.docker.images import ENV_PREFIX, build_local
from provisioning.environment import Environment
from provisioning.local.users import run_as_for
from provisioning.spec import EnvironmentSpec, Resource

ALL = tuple(Resource)
BACKENDS = ["local", "docker"]
PROVIDER_MODULE = "tests.fixtures.provider_send"


def spec(kinds: tuple[Resource, ...] = ALL, **kw: Any) -> EnvironmentSpec:
    """A spec for ``kinds``, naming the test provider module when the provider is listed."""
    module = PROVIDER_MODULE if Resource.PROVIDER in kinds else ""
    return EnvironmentSpec(resources=kinds, provider_module=module, **kw)


class Recorder(logging.Handler):
    """Keeps every formatted log line, to prove no secret was logged."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture(scope="session")
def log_lines() -> Iterator[list[str]]:
    recorder = Recorder()
    logger = logging.getLogger("provisioning")
    old = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(recorder)
    yield recorder.lines
    logger.removeHandler(recorder)
    logger.setLevel(old)


@pytest.fixture(scope="session")
def data_dir() -> Iterator[Path]:
    # Under /tmp with o+x: servers run as an unprivileged user when tests run as root.
    path = Path(tempfile.mkdtemp(prefix="cruscible-prov-", dir="/tmp"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def docker_engine(data_dir: Path) -> Iterator[str]:
    """A Docker engine (started here if none runs) with the local images, configured through
    the environment (so that subprocesses making a docker backend see the same settings)."""
    try:
        engine = ensure_engine()
    except EngineUnavailable as exc:
        pytest.skip(f"no Docker engine: {exc}")
    run_as = run_as_for(data_dir)
    user = container_user(run_as.uid, run_as.gid)
    client = docker.DockerClient(base_url=engine.url)
    refs = build_local(client, user)
    client.close()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DOCKER_HOST", engine.url)
        patch.setenv(NETWORK_ENV, "host")  # no bridge on these machines (see DESIGN.md)
        for kind, ref in refs.items():
            patch.setenv(ENV_PREFIX + kind.value.upper(), ref)
        yield engine.url
    engine.stop()


@pytest.fixture(scope="session", params=BACKENDS)
async def backend(
    request: pytest.FixtureRequest, data_dir: Path, log_lines: list[str]
) -> AsyncIterator[Backend]:
    if request.param == "docker":
        request.getfixturevalue("docker_engine")
    be = make_backend(request.param, data_dir / request.param)
    yield be
    for env in await be.list():
        await be.destroy(env.id)
    await be.close()


async def _make(backend: Backend, env_id: str, kinds: tuple[Resource, ...]) -> Environment:
    return await backend.create(
        env_id, spec(kinds, owner=f"owner-{env_id}", parameters={"RATE_LIMIT": "20"})
    )


@pytest.fixture(scope="session")
async def envs(backend: Backend) -> AsyncIterator[tuple[Environment, Environment]]:
    """Two full environments, made concurrently."""
    a, b = await asyncio.gather(
        _make(backend, "env-aaaaaa", ALL), _make(backend, "env-bbbbbb", ALL)
    )
    yield a, b
    await asyncio.gather(backend.destroy(a.id), backend.destroy(b.id))


@pytest.fixture(scope="session")
def env_a(envs: tuple[Environment, Environment]) -> Environment:
    return envs[0]


@pytest.fixture(scope="session")
def env_b(envs: tuple[Environment, Environment]) -> Environment:
    return envs[1]


def containers_of(backend: Backend, env_id: str) -> list[str]:
    """Names of the containers (any state) the docker backend holds for ``env_id``."""
    client = getattr(backend, "client", None)
    if client is None:
        return []
    labels = [f"cruscible.env={env_id}", f"cruscible.data_dir={backend.data_dir}"]  # type: ignore[attr-defined]
    return [c.name for c in client.containers.list(all=True, filters={"label": labels})]


def marked_pids(data_dir: Path, env_id: str | None = None) -> list[int]:
    """Live processes carrying our marker for ``data_dir`` (scanned straight from /proc)."""
    out = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry.name}/environ").read_bytes()
            cwd = os.readlink(f"/proc/{entry.name}/cwd")
        except OSError:
            continue
        env = dict(item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
        marked = env.get(b"CRUSCIBLE_DATA_DIR") == str(data_dir).encode() and (
            env_id is None or env.get(b"CRUSCIBLE_ENV_ID") == env_id.encode()
        )
        inside = cwd.startswith(str(data_dir / "envs" / (env_id or "")))
        if marked or inside:
            out.append(int(entry.name))
    return out
