"""``cruscible worker``: refused without a PostgreSQL store; with one, it announces itself to
the job engine and a SIGTERM ends it cleanly (exit 0)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.scale.conftest import ROOT, Workers


def cruscible() -> list[str]:
    script = Path(sys.executable).parent / "cruscible"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "bot"]


def test_a_worker_needs_a_postgresql_store(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CRUSCIBLE_DATABASE_URL"}
    env["CRUSCIBLE_DATA_DIR"] = str(tmp_path)
    done = subprocess.run(
        [*cruscible(), "worker"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    assert "a worker takes its jobs from a PostgreSQL store" in done.stderr


async def test_the_worker_command_joins_the_engine_and_stops_on_sigterm(
    db_url: str, workers: Workers
) -> None:
    proc = workers.start(argv=[*cruscible(), "worker", "--concurrency", "1"])

    await workers.registered(1, within=60)
    proc.send_signal(signal.SIGTERM)

    assert proc.wait(30) == 0, workers.logs()
    assert "Traceback" not in workers.logs()
