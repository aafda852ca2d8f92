"""Sandbox fixtures: bubblewrap present (installed from Debian when root), fresh box roots."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from provisioning.sandbox import Box
from tests.support.sandbox import ensure_bubblewrap


@pytest.fixture(scope="session")
def bwrap() -> str:
    """Boxes can run here: bubblewrap is installed (``apt-get install bubblewrap`` as root)."""
    reason = ensure_bubblewrap()
    if reason is not None:
        pytest.skip(f"sandboxes cannot run here: {reason}")
    return shutil.which("bwrap") or "bwrap"


@pytest.fixture
def workspace(bwrap: str) -> Iterator[Path]:
    """A short, world-searchable directory holding ``app/`` (the workdir) and box roots."""
    path = Path(tempfile.mkdtemp(prefix="sbx-", dir="/tmp"))
    path.chmod(0o755)
    (path / "app").mkdir(mode=0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def boxes() -> AsyncIterator[list[Box]]:
    """Boxes a test started; all stopped at the end whatever happened."""
    started: list[Box] = []
    yield started
    await asyncio.gather(*(box.stop() for box in started))


@pytest.fixture(scope="session")
def docker_engine(bwrap: str) -> Iterator[str]:
    """A Docker engine for docker boxes (``$DOCKER_HOST``, or a private bridge-less dockerd
    started here, installing ``docker.io`` as root when missing), exported as ``DOCKER_HOST``."""
    from provisioning.docker.engine import EngineUnavailable, ensure_engine

    try:
        engine = ensure_engine()
    except EngineUnavailable as exc:
        pytest.skip(f"dockerd cannot start here: {exc}")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DOCKER_HOST", engine.url)
        yield engine.url
    engine.stop()
