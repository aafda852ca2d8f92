"""Commands that neither grade nor plot import only what they use (the import graph, not time)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

HEAVY = {
    "matplotlib": "plots",
    "grading.plots": "plots",
    "discord": "the Discord adapter",
    "slack_bolt": "the Slack adapter",
    "slack_sdk": "the Slack adapter",
    "bot.core.coach": "the coach",
    "bot.store": "the store",
    "sqlalchemy": "the store",
    "alembic": "the store's migrations",
    "apscheduler": "the schedules",
}
CATALOG_EXTRA = {"aiohttp": "the grader's HTTP client", "numpy": "the grader's statistics"}


@pytest.fixture(scope="module")
def empty_data_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="cruscible-imports-"))
    path.chmod(0o755)  # as root, the servers' user must reach it
    yield path
    shutil.rmtree(path, ignore_errors=True)


def imported(args: list[str], data_dir: Path) -> set[str]:
    """The modules ``cruscible ARGS`` imports, read from ``python -X importtime``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRUSCIBLE_")}
    env["CRUSCIBLE_DATA_DIR"] = str(data_dir)
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "bot", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    names = {
        line.rsplit("|", 1)[1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert "bot.cli" in names  # the report was read
    return names


def roots(names: set[str], forbidden: dict[str, str]) -> list[str]:
    return sorted(
        f"{name} ({why})"
        for name in names
        for mod, why in forbidden.items()
        if name == mod or name.startswith(mod + ".")
    )


@pytest.mark.parametrize(
    ("args", "forbidden"),
    [
        (["--help"], {**HEAVY, **CATALOG_EXTRA, "challenges": "the catalog"}),
        (["env", "list"], {**HEAVY, **CATALOG_EXTRA, "challenges": "the catalog"}),
        (["env", "list", "--json"], {**HEAVY, **CATALOG_EXTRA, "psycopg": "a server client"}),
        (["challenges", "list"], {**HEAVY, **CATALOG_EXTRA}),
        (["challenges", "list", "--json"], {**HEAVY, **CATALOG_EXTRA}),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else "",
)
def test_light_commands_leave_the_heavy_parts_out(
    args: list[str], forbidden: dict[str, str], empty_data_dir: Path
) -> None:
    assert roots(imported(args, empty_data_dir), forbidden) == []
