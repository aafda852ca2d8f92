"""End to end: learner code given as an archive, built and run in a sandbox next to a real
environment, graded for real through the balancer."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest

from bot.app import App
from bot.core.hosted import HostedGrader
from provisioning import Environment

from .conftest import add_fixture

pytestmark = pytest.mark.slow


def zip_repo(repo: Path, dest: Path) -> Path:
    """The repository as GitHub would serve it: one top folder inside the zip."""
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(repo.rglob("*")):
            if path.is_file():
                zf.write(path, f"learner-main/{path.relative_to(repo)}")
    return dest


async def test_a_zip_of_a_reference_design_is_built_run_and_graded(
    app: App, hosted: HostedGrader, rate_env: Environment, redis_lua_repo: Path, tmp_path: Path
) -> None:
    archive = zip_repo(redis_lua_repo, tmp_path / "learner.zip")
    said: list[str] = []
    result = await hosted.grade_code(
        app.catalog.get("rate-limiter"), archive, rate_env, seed=7, say=said.append
    )
    report = result.graded.report
    assert report.passed, [(c.id, c.status, c.detail) for c in report.checks if c.status != "pass"]
    assert report.metrics["accuracy.over_admitted"] == 0
    assert not result.crashed
    assert report.target.startswith(result.submission.id)
    # what ran, and under which caps
    meta = result.submission.meta()
    assert meta["status"] == "finished" and meta["source_kind"] == "archive"
    assert meta["isolation"]["user"] in {"cruscible-sandbox", "root"} or meta["isolation"]["user"]
    assert meta["isolation"]["net"].startswith("private")
    assert "memory 512 MB" in meta["isolation"]["limits"]
    assert result.timings["to_first_request"] > result.timings["build"] > 0
    assert any("built in" in line for line in said)
    # logs kept, masked; the work directory is gone
    logs = result.submission.logs_dir
    assert (logs / "build.log").read_text().count("Successfully installed") == 1
    web_log = (logs / "web-0.log").read_text()
    assert "listening on" in web_log
    record_text = "".join(p.read_text() for p in result.submission.record.rglob("*.json"))
    record_text += "".join(p.read_text() for p in logs.iterdir())
    for secret in rate_env.secrets():
        assert secret not in record_text
    assert not result.submission.work.exists()
    assert json.loads((result.graded.out_dir / "report.json").read_text())["passed"] is True


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
    result = await hosted.grade_code(app.catalog.get("rate-limiter"), repo, rate_env, seed=7)
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
        app.catalog.get("notification-service"), repo, notify_env, seed=7
    )
    report = result.graded.report
    assert report.passed, [(c.id, c.status, c.detail) for c in report.checks if c.status != "pass"]
    assert report.metrics["delivery.lost"] == 0
    assert report.metrics["delivery.duplicates"] == 0
    assert not result.crashed  # the worker stayed up; only it delivers (web only publishes)
    assert (result.submission.logs_dir / "worker-0.log").is_file()
