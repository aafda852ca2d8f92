"""Real servers for the provisioning tests: one data dir per session, shared environments."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from provisioning.backend import Backend
from provisioning.backends import make_backend
from provisioning.environment import Environment
from provisioning.spec import EnvironmentSpec, Resource

ALL = tuple(Resource)
BACKENDS = ["local"]  # add "docker" here once it exists


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


@pytest.fixture(scope="session", params=BACKENDS)
async def backend(
    request: pytest.FixtureRequest, data_dir: Path, log_lines: list[str]
) -> AsyncIterator[Backend]:
    be = make_backend(request.param, data_dir / request.param)
    yield be
    for env in await be.list():
        await be.destroy(env.id)
    await be.close()


async def _make(backend: Backend, env_id: str, kinds: tuple[Resource, ...]) -> Environment:
    return await backend.create(
        env_id,
        EnvironmentSpec(resources=kinds, owner=f"owner-{env_id}", parameters={"RATE_LIMIT": "20"}),
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
