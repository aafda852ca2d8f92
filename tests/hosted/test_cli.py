"""`cruscible submit` refuses bad input before any environment exists; `cruscible logs` shows a
submission's logs with the secrets masked."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.app import App
from bot.core.hosted import HostedError, HostedGrader
from provisioning import Environment

from .conftest import FIXTURES

CLI = [sys.executable, "-m", "bot"]


def cli(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CRUSCIBLE_DATA_DIR": str(data_dir), "COLUMNS": "200"}
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


@pytest.fixture(scope="module")
def fresh_data_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="cruscible-submit-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (
            {"main.py": "", "cruscible.toml": "[processes.web]\ncommand = 'x'\nreplicas = 9\n"},
            "cruscible.toml: processes.web.replicas: must be between 1 and 4",
        ),
        ({"app.py": ""}, "nothing to run: expected a cruscible.toml"),
    ],
)
def test_submit_refuses_bad_input_before_provisioning(
    sandbox: None, fresh_data_dir: Path, tmp_path: Path, files: dict[str, str], message: str
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    res = cli("submit", "rate-limiter", str(tmp_path), data_dir=fresh_data_dir)
    assert res.returncode == 2, res.stderr
    assert message in res.stderr
    assert "Traceback" not in res.stderr
    envs = cli("env", "list", "--json", data_dir=fresh_data_dir)
    assert json.loads(envs.stdout) == []


def test_submit_refuses_a_missing_source_and_ssh_urls(sandbox: None, fresh_data_dir: Path) -> None:
    res = cli("submit", "rate-limiter", "/nonexistent/code.zip", data_dir=fresh_data_dir)
    assert res.returncode == 2 and "neither a folder" in res.stderr
    res = cli("submit", "rate-limiter", "git@github.com:a/b.git", data_dir=fresh_data_dir)
    assert res.returncode == 2 and "only public https://" in res.stderr


async def test_logs_shows_a_submissions_masked_logs(
    app: App, hosted: HostedGrader, rate_env: Environment, tmp_path: Path
) -> None:
    (tmp_path / "main.py").write_text(
        "import os\nprint('url', os.environ['REDIS_URL'], flush=True)\n"
    )
    challenge = app.catalog.get("rate-limiter")
    sub, _ = await hosted.prepare(tmp_path, challenge)
    with pytest.raises(HostedError):
        await hosted.start(sub, challenge, rate_env)
    data_dir = app.settings.data_dir
    res = cli("logs", sub.id, data_dir=data_dir)
    assert res.returncode == 0, res.stderr
    assert "url •••" in res.stdout
    assert all(s not in res.stdout for s in rate_env.secrets())
    assert cli("logs", sub.id, "--process", "build", data_dir=data_dir).returncode == 0
    bad = cli("logs", sub.id, "--process", "worker", data_dir=data_dir)
    assert bad.returncode == 2 and "known: build, web" in bad.stderr
    assert cli("logs", "sub-000000000000", data_dir=data_dir).returncode == 2


async def test_logs_follow_prints_as_it_runs_and_ends_with_the_submission(
    sandbox: None, fresh_data_dir: Path, work_root: Path, tmp_path: Path
) -> None:
    import asyncio
    from datetime import UTC, datetime, timedelta

    from provisioning.hosted.submission import Submission
    from provisioning.sandbox import Limits

    (tmp_path / "main.py").write_text((FIXTURES / "stdlib_web.py").read_text())
    (tmp_path / "cruscible.toml").write_text(
        '[processes.web]\ncommand = "python main.py"\n\n[processes.ticker]\n'
        'command = "for i in 1 2 3; do echo tick $i; sleep 1; done; sleep 60"\n'
    )
    now = datetime.now(UTC)
    nothing = Environment("env-none", "me", "local", "", now, now + timedelta(hours=1), {})
    sub = Submission.create(fresh_data_dir, work_root=work_root)
    await sub.fetch(tmp_path)
    await sub.build()
    service = await sub.run(nothing, limits=Limits())
    follower = await asyncio.create_subprocess_exec(
        *CLI,
        "logs",
        sub.id,
        "--process",
        "ticker",
        "--follow",
        env={**os.environ, "CRUSCIBLE_DATA_DIR": str(fresh_data_dir)},
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        for _ in range(100):
            if "tick 3" in sub.live_log("ticker").read_text():
                break
            await asyncio.sleep(0.1)
    finally:
        await sub.finish(service, ())
    out, _ = await asyncio.wait_for(follower.communicate(), 60)
    assert follower.returncode == 0
    assert out.decode().split() == ["tick", "1", "tick", "2", "tick", "3"]
