"""Shared fixtures: one data directory and one app (store, catalog, real provisioning) per run.

``make test`` runs the suite on two pytest-xdist workers (``--dist loadgroup``). Each test
directory is one group, so a directory's session and module fixtures start once, and what a
directory holds host-wide (the Docker engine of tests/provisioning, the default data directory
of tests/e2e) is never used by two workers at once; the challenges' grades run one at a time.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bot.app import App, open_app
from bot.config import Settings
from tests.support.sandbox import ensure_bubblewrap

TESTS = Path(__file__).parent


def pytest_sessionstart(session: pytest.Session) -> None:
    """Install bubblewrap once, before any worker starts (apt-get holds a host-wide lock)."""
    if not hasattr(session.config, "workerinput"):
        ensure_bubblewrap()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        directory = item.path.relative_to(TESTS).parts[0]
        item.add_marker(pytest.mark.xdist_group(directory))


@pytest.fixture(scope="session")
def data_dir() -> Iterator[Path]:
    # Not under pytest's 0700 tmp root: PostgreSQL runs as an unprivileged user and must reach it.
    path = Path(tempfile.mkdtemp(prefix="cruscible-test-"))
    path.chmod(0o755)
    os.environ["CRUSCIBLE_DATA_DIR"] = str(path)
    yield path


@pytest.fixture(scope="session")
def settings(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir, max_envs_per_owner=3)


@pytest.fixture(scope="session")
async def app(settings: Settings) -> AsyncIterator[App]:
    async with open_app(settings) as application:
        yield application
        for env in await application.provisioner.list():
            await application.provisioner.down(env.id)
