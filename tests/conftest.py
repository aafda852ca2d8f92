"""Shared fixtures: one data directory and one app (store, catalog, real provisioning) per run."""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bot.app import App, open_app
from bot.config import Settings


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
