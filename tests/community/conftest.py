"""Each test gets its own data directory (world-searchable: the local backend's servers run
unprivileged) and a clock it controls."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.community.support import Clock


@pytest.fixture
def home() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="cruscible-community-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2026, 11, 30, 7, 0, tzinfo=UTC))  # a Monday
