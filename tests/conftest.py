"""Shared fixtures: one data directory and one app (store, catalog, real provisioning) per run.

``make test`` runs the suite on two pytest-xdist workers. Each test directory goes to one
worker whole (see ``pytest_xdist_make_scheduler``), so a directory's session and module
fixtures start once, and what a directory holds host-wide (the Docker engine of
tests/provisioning, the default data directory of tests/e2e) is never used by two workers at
once; the challenges' grades run one at a time.
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


def pytest_sessionstart(session: pytest.Session) -> None:
    """Install bubblewrap once, before any worker starts (apt-get holds a host-wide lock)."""
    if not hasattr(session.config, "workerinput"):
        ensure_bubblewrap()


# The load generator's own tests bound its dispatch lag: never beside a challenge's grade.
SAME_WORKER = {"grading": "challenges"}


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """pytest-xdist's scope scheduler with a test directory as the scope (one worker runs a
    whole directory; with ``--no-loadscope-reorder`` they are handed out in collection order,
    so the longest one, tests/challenges, starts first)."""
    from xdist.scheduler import LoadScopeScheduling

    class ByDirectory(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            directory = nodeid.split("/")[1]  # "tests/<directory>/test_….py::…"
            return SAME_WORKER.get(directory, directory)

    return ByDirectory(config, log)


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
