"""`cruscible submit` end to end, in a subprocess, without ``--env``: it provisions an
environment, grades the code for real, tears the environment down; ``--out`` gets the report; a
failing grade exits 1 (as ``cruscible grade``); ``--keep`` leaves the code answering after the
grade until the environment goes (Ctrl-C here), then both are gone."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import pytest

from bot.app import App
from provisioning.backend import ProvisioningError
from provisioning.hosted.submission import Submission

from .conftest import add_fixture

pytestmark = pytest.mark.slow

PROVISIONED = re.compile(r"provisioned (env-[0-9a-f]+) for rate-limiter")


def cli_env(app: App, tmpdir_root: Path) -> dict[str, str]:
    return {
        **os.environ,
        "CRUSCIBLE_DATA_DIR": str(app.settings.data_dir),
        "TMPDIR": str(tmpdir_root),
        "COLUMNS": "200",
    }


async def gone(app: App, env_id: str) -> bool:
    try:
        await app.provisioner.get(env_id)
    except ProvisioningError:
        return True
    return False


async def answers(url: str) -> bool:
    try:
        timeout = aiohttp.ClientTimeout(total=3)
        async with aiohttp.ClientSession(timeout=timeout) as http, http.get(f"{url}/healthz") as r:
            return r.status == 200
    except (aiohttp.ClientError, OSError, TimeoutError):
        return False


async def test_a_failing_grade_without_env_exits_1_writes_out_and_tears_its_environment_down(
    app: App, sandbox: None, redis_lua_repo: Path, tmpdir_root: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(redis_lua_repo, repo)
    add_fixture(
        repo,
        "memory_limiter.py",
        '[processes.web]\ncommand = "python memory_limiter.py --port $PORT"\nreplicas = 2\n',
    )
    out = tmp_path / "out"
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "bot", "submit", "rate-limiter", str(repo)],
        *["--seed", "7", "--out", str(out)],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=cli_env(app, tmpdir_root),
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 600)
    res = SimpleNamespace(
        returncode=proc.returncode, stdout=stdout.decode(), stderr=stderr.decode()
    )
    assert res.returncode == 1, res.stdout[-2000:] + res.stderr[-3000:]  # graded, failed
    report = json.loads((out / "report.json").read_text())
    assert not report["passed"] and report["metrics"]["accuracy.over_admitted"] > 0
    assert (out / "report.md").is_file()
    env_id = PROVISIONED.search(res.stderr).group(1)  # type: ignore[union-attr]
    assert report["environment"] == env_id
    assert f"{env_id} destroyed" in res.stderr and await gone(app, env_id)


async def test_keep_leaves_the_code_answering_until_its_environment_is_torn_down(
    app: App, sandbox: None, redis_lua_repo: Path, tmpdir_root: Path, tmp_path: Path
) -> None:
    err = tmp_path / "stderr"
    with err.open("w") as sink:
        proc = await asyncio.create_subprocess_exec(
            *[sys.executable, "-m", "bot", "submit", "rate-limiter", str(redis_lua_repo)],
            *["--seed", "7", "--keep", "--json"],
            stdout=asyncio.subprocess.PIPE,
            stderr=sink,
            env=cli_env(app, tmpdir_root),
        )
    try:
        deadline = time.monotonic() + 600
        while "stays up until" not in err.read_text() and time.monotonic() < deadline:
            assert proc.returncode is None, err.read_text()[-3000:]
            await asyncio.sleep(0.5)
        text = err.read_text()
        url = re.search(r"(http://127\.0\.0\.1:\d+) stays up until \d\d:\d\d UTC", text)
        assert url is not None, text[-3000:]
        env_id = PROVISIONED.search(text).group(1)  # type: ignore[union-attr]
        assert await answers(url.group(1))  # graded, and still running
        assert not await gone(app, env_id)
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C: stop it now rather than at the TTL
        stdout, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 130, err.read_text()[-3000:]
    report = json.loads(stdout)
    assert report["passed"] and report["environment"] == env_id
    assert not await answers(url.group(1))
    assert await gone(app, env_id)
    sub = Submission.open(app.settings.data_dir, report["target"].split()[0])
    assert sub.meta()["status"] == "finished" and not sub.work.exists()
