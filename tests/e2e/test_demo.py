"""`make demo`, the README's first command, runs the whole loop on real servers, with no
setting, and leaves nothing running."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from bot.config import default_data_dir
from tests.e2e.newcomer import assert_nothing_left, private_home, shell
from tests.support.sandbox import ensure_bubblewrap

pytestmark = pytest.mark.slow
PROJECT = Path(__file__).resolve().parents[2]


def test_a_newcomer_runs_the_demo_with_no_setting(tmp_path: Path) -> None:
    """As a newcomer would: no CRUSCIBLE_ variable at all and a fresh private home (mode 0700,
    as Debian ships /root); as root here, servers run as the service user all the same."""
    sandboxed = ensure_bubblewrap() is None  # as `make demo` installs it when root
    home = private_home()
    try:
        out = check_demo(home, tmp_path / "out")
    finally:
        shutil.rmtree(home, ignore_errors=True)
    if sandboxed:  # the first design goes in as a learner's code, built and run in a box
        assert "'redis_lua' is submitted as code" in out, out[-3000:]


def check_demo(home: Path, reports: Path) -> str:
    env = shell({"HOME": str(home)})
    res = subprocess.run(
        ["make", "-C", str(PROJECT), "demo", f"DEMO_OUT={reports}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,  # the first `make` of a clone also installs .venv
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
    assert home.stat().st_mode & 0o777 == 0o700  # never loosened
    assert "no server process left behind" in out
    destroyed = re.search(r"Environment (env-[0-9a-f]+) destroyed", out)
    assert destroyed is not None
    data = default_data_dir() if os.geteuid() == 0 else home / ".local/share/cruscible"
    assert_nothing_left(destroyed.group(1), data, root=os.geteuid() == 0)
    designs = sorted(p.name for p in reports.iterdir())
    assert len(designs) == 2
    hit: set[str] = set()
    for design in designs:
        report = json.loads((reports / design / "report.json").read_text())
        assert report["schema"] == 1 and report["challenge"] == "rate-limiter"
        assert report["faults"], design  # the store each design uses goes away under load
        hit.update(f["resource"] for f in report["faults"])
        assert (reports / design / "latency.png").stat().st_size > 10_000
    assert hit == {"redis", "postgres"}  # Redis counters, then PostgreSQL upserts
    return out
