"""`cruscible demo` runs the whole loop on real servers and leaves nothing running."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_demo_shows_all_seven_steps_and_exits_0(data_dir: Path, tmp_path: Path) -> None:
    env = {**os.environ, "CRUSCIBLE_DATA_DIR": str(data_dir), "COLUMNS": "160"}
    res = subprocess.run(
        [sys.executable, "-m", "bot", "demo", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=400,
        check=False,
    )
    out = res.stdout
    assert res.returncode == 0, out[-3000:] + res.stderr[-3000:]
    for heading in (
        "1. The daily post",
        "2. ada presses Start",
        "3. Reference design",
        "4. ada submits",
        "5. Report files",
        "6. The two designs, compared",
        "7. Teardown",
    ):
        assert heading in out
    assert "DATABASE_URL=" in out and "REDIS_URL=" in out  # the DM, in the learner's own terminal
    assert "no server process left behind" in out
    designs = sorted(p.name for p in tmp_path.iterdir())
    assert len(designs) == 2
    for design in designs:
        report = json.loads((tmp_path / design / "report.json").read_text())
        assert report["schema"] == 1 and report["challenge"] == "rate-limiter"
        assert report["faults"] and report["faults"][0]["resource"] == "redis"
        assert (tmp_path / design / "latency.png").stat().st_size > 10_000
