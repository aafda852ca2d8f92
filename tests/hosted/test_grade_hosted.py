"""End to end: learner code given as an archive, built and run in a sandbox next to a real
environment, graded for real through the balancer."""

from __future__ import annotations

import getpass
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from bot.app import App
from bot.core.hosted import HostedGrader
from provisioning import Environment
from provisioning.hosted.submission import Submission, env_secrets

from .conftest import TERMINAL, add_fixture

pytestmark = pytest.mark.slow


def zip_repo(repo: Path, dest: Path) -> Path:
    """The repository as GitHub would serve it: one top folder inside the zip."""
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(repo.rglob("*")):
            if path.is_file():
                zf.write(path, f"learner-main/{path.relative_to(repo)}")
    return dest


def test_a_zip_submitted_from_the_command_line_is_built_run_and_graded(
    app: App, rate_env: Environment, redis_lua_repo: Path, tmpdir_root: Path, tmp_path: Path
) -> None:
    archive = zip_repo(redis_lua_repo, tmp_path / "learner.zip")
    env = {
        **os.environ,
        "CRUSCIBLE_DATA_DIR": str(app.settings.data_dir),
        "TMPDIR": str(tmpdir_root),
        "COLUMNS": "200",
    }
    res = subprocess.run(
        [sys.executable, "-m", "bot", "submit", "rate-limiter", str(archive)]
        + ["--env", rate_env.id, "--seed", "7", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    report = json.loads(res.stdout)
    assert report["passed"] and report["metrics"]["accuracy.over_admitted"] == 0
    assert not any(c["id"] == "hosted.processes" for c in report["checks"])
    sub_id = report["target"].split()[0]
    assert sub_id.startswith("sub-") and "(hosted, http://127.0.0.1:" in report["target"]
    assert "built in" in res.stderr and f"cruscible logs {sub_id}" in res.stderr
    # what ran, and under which caps
    sub = Submission.open(app.settings.data_dir, sub_id)
    meta = sub.meta()
    assert meta["status"] == "finished" and meta["source_kind"] == "archive"
    user = "cruscible-sandbox" if os.geteuid() == 0 else getpass.getuser()
    assert meta["isolation"]["user"] == user
    assert meta["isolation"]["net"].startswith("private")
    assert "memory 512 MB" in meta["isolation"]["limits"]
    assert meta["build"]["cached"] is False and meta["environment"] == rate_env.id
    # logs kept, masked; the work directory is gone
    assert (sub.logs_dir / "build.log").read_text().count("Successfully installed") == 1
    assert "listening on" in (sub.logs_dir / "web-0.log").read_text()
    shown = (res.stdout + res.stderr).encode()
    shown += b"".join(p.read_bytes() for p in sub.record.rglob("*") if p.is_file())
    for secret in env_secrets(rate_env):
        assert secret.encode() not in shown
    assert not sub.work.exists()


async def test_two_replicas_keeping_counts_in_memory_are_caught_over_admitting(
    app: App, hosted: HostedGrader, rate_env: Environment, redis_lua_repo: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(redis_lua_repo, repo)
    add_fixture(
        repo,
        "memory_limiter.py",
        '[processes.web]\ncommand = "python memory_limiter.py --port $PORT"\nreplicas = 2\n',
    )
    result = await hosted.grade_code(
        app.catalog.get("rate-limiter"), repo, rate_env, seed=7, scope=TERMINAL
    )
    report = result.graded.report
    assert report.metrics["accuracy.over_admitted"] > 0
    assert report.check("accuracy.atomic").status == "fail"
    assert not report.passed
    assert sorted(p["name"] for p in result.submission.meta()["processes"]) == ["web"]
    assert (result.submission.logs_dir / "web-1.log").exists()


async def test_a_web_and_a_worker_process_deliver_every_notification(
    app: App, hosted: HostedGrader, notify_env: Environment, tmp_path: Path
) -> None:
    from bot.core.hosted import package_reference

    repo = package_reference(
        app.catalog.get("notification-service"), "queue_worker", tmp_path / "r"
    )
    add_fixture(
        repo,
        "notification_web.py",
        '[build]\npython = "requirements.txt"\n\n'
        '[processes.web]\ncommand = "python notification_web.py --port $PORT"\n\n'
        "[processes.worker]\n"
        'command = "python -m challenges.notification-service.solutions.queue_worker --worker"\n',
    )
    result = await hosted.grade_code(
        app.catalog.get("notification-service"), repo, notify_env, seed=7, scope=TERMINAL
    )
    report = result.graded.report
    assert report.passed, [(c.id, c.status, c.detail) for c in report.checks if c.status != "pass"]
    assert report.metrics["delivery.lost"] == 0
    assert report.metrics["delivery.duplicates"] == 0
    assert not result.crashed  # the worker stayed up; only it delivers (web only publishes)
    assert (result.submission.logs_dir / "worker-0.log").is_file()


async def test_a_git_repository_is_cloned_built_run_and_graded(
    app: App, hosted: HostedGrader, rate_env: Environment, redis_lua_repo: Path, tmp_path: Path
) -> None:
    from .test_pipeline import git

    repo = tmp_path / "repo"
    shutil.copytree(redis_lua_repo, repo)
    git("init", "-q", "-b", "main", cwd=repo)
    git("add", ".", cwd=repo)
    git("commit", "-q", "-m", "limiter", cwd=repo)
    result = await hosted.grade_code(
        app.catalog.get("rate-limiter"), str(repo), rate_env, seed=7, scope=TERMINAL
    )
    report = result.graded.report
    assert report.passed, [(c.id, c.status, c.detail) for c in report.checks if c.status != "pass"]
    assert report.metrics["accuracy.over_admitted"] == 0 and not result.crashed
    meta = result.submission.meta()
    assert (meta["source_kind"], meta["status"]) == ("git", "finished")
    assert report.target.startswith(f"{result.submission.id} (hosted, http://127.0.0.1:")
