"""The pipeline without a full grade: git sources, the build cache, readiness and crashes, each
on a real sandbox next to a real environment."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import aiohttp
import pytest

from bot.app import App
from bot.core.grader import Graded
from bot.core.hosted import HostedError, HostedGrader, _add_crash_check
from grading.report import Report
from provisioning import Environment
from provisioning.hosted.build import BuildError
from provisioning.hosted.submission import Submission, env_secrets

from .conftest import FIXTURES, TERMINAL


def git(*args: str, cwd: Path) -> None:
    who = {"GIT_AUTHOR_NAME": "l", "GIT_AUTHOR_EMAIL": "l@l", "GIT_COMMITTER_NAME": "l"}
    env = {**os.environ, **who, "GIT_COMMITTER_EMAIL": "l@l"}
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


def stdlib_repo(dest: Path, manifest: str) -> Path:
    dest.mkdir()
    shutil.copy(FIXTURES / "stdlib_web.py", dest / "main.py")
    (dest / "cruscible.toml").write_text(manifest)
    return dest


async def test_git_then_the_same_requirements_from_a_folder_hit_the_build_cache(
    app: App, hosted: HostedGrader, redis_lua_repo: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(redis_lua_repo, repo)
    git("init", "-q", "-b", "main", cwd=repo)
    git("add", ".", cwd=repo)
    git("commit", "-q", "-m", "limiter", cwd=repo)
    challenge = app.catalog.get("rate-limiter")
    first, built = await hosted.prepare(str(repo), challenge, scope=TERMINAL)
    second, again = await hosted.prepare(redis_lua_repo, challenge, scope=TERMINAL)
    try:
        assert first.meta()["source_kind"] == "git" and second.meta()["source_kind"] == "folder"
        assert not (first.root / ".git").exists()
        venv_python = second.root / ".venv" / "bin" / "python"
        assert venv_python.is_symlink() or venv_python.exists()
        assert again.cached and again.key == built.key
        assert again.seconds < 10
    finally:
        await first.cleanup()
        await second.cleanup()


async def test_a_web_process_that_exits_is_reported_with_its_masked_log(
    app: App, hosted: HostedGrader, rate_env: Environment, tmp_path: Path
) -> None:
    repo = stdlib_repo(
        tmp_path / "crash",
        '[processes.web]\ncommand = "python main.py; echo bye; exit 3"\n',
    )
    (repo / "main.py").write_text(
        "import os\nprint('url', os.environ['REDIS_URL'], flush=True)\nraise SystemExit(0)\n"
    )
    challenge = app.catalog.get("rate-limiter")
    sub, _ = await hosted.prepare(repo, challenge)
    with pytest.raises(HostedError) as info:
        await hosted.start(sub, challenge, rate_env)
    text = str(info.value)
    assert "did not answer GET /healthz" in text
    assert "web[0]: exited 3" in text and "bye" in text
    assert "url •••" in text
    for secret in env_secrets(rate_env):
        assert secret not in text
    assert sub.meta()["status"] == "finished" and not sub.work.exists()
    assert "url •••" in (sub.logs_dir / "web-0.log").read_text()


async def test_a_worker_that_stops_is_seen_while_the_web_keeps_serving(
    app: App, hosted: HostedGrader, rate_env: Environment, tmp_path: Path
) -> None:
    repo = stdlib_repo(
        tmp_path / "ok",
        '[processes.web]\ncommand = "python main.py"\nreplicas = 2\n\n'
        '[processes.worker]\ncommand = "echo working; sleep 1; exit 1"\n',
    )
    challenge = app.catalog.get("rate-limiter")
    sub, built = await hosted.prepare(repo, challenge)
    assert built.cached or built.seconds > 0
    service = await hosted.start(sub, challenge, rate_env)
    try:
        async with aiohttp.ClientSession() as http:
            # The bundle and a distinct $PORT per replica are in the processes' environment.
            ports = set()
            for _ in range(4):
                async with http.get(f"{service.url}/env/PORT") as resp:
                    ports.add(await resp.text())
            assert len(ports) == 2
            async with http.get(f"{service.url}/env/RATE_LIMIT") as resp:
                assert await resp.text() == rate_env.bundle["RATE_LIMIT"]
        for _ in range(100):
            if service.stopped():
                break
            await __import__("asyncio").sleep(0.1)
        [stopped] = service.stopped()
        assert (stopped.name, stopped.exit_code, stopped.reason) == ("worker", 1, "exited 1")
        assert "working" in service.describe([stopped])
        # What a grade does with it: a warning check carrying the reason and the log tail.
        graded = Graded(Report("rate-limiter", service.url, rate_env.id, 7), tmp_path, [])
        _add_crash_check(graded, [stopped], service.describe([stopped]))
        check = graded.report.check("hosted.processes")
        assert check.status == "warn" and check.max_points == 0
        assert check.detail == "stopped during the grade: worker[0] exited 1"
        assert "working" in check.evidence["log_tail"]
        assert service.box.isolation["net"].startswith("private")
    finally:
        await sub.finish(service, env_secrets(rate_env))
    assert (sub.logs_dir / "worker-0.log").read_text().strip() == "working"


async def test_a_failing_build_and_a_build_over_its_time_say_why_with_the_last_lines(
    app: App, hosted: HostedGrader, redis_lua_repo: Path, tmp_path: Path
) -> None:
    challenge = app.catalog.get("rate-limiter")
    missing = stdlib_repo(tmp_path / "missing", '[processes.web]\ncommand = "python main.py"\n')
    (missing / "requirements.txt").write_text("--no-index\nno-such-package-anywhere==1.0\n")
    with pytest.raises(HostedError) as info:
        await hosted.prepare(missing, challenge)
    text = str(info.value)
    assert text.startswith("the build failed (exited 1); its last lines:")
    assert "no-such-package-anywhere" in text
    sub_id = info.value.submission  # its record keeps the build's log
    assert sub_id is not None
    assert "missing" in (app.settings.data_dir / "submissions" / sub_id / "meta.json").read_text()
    assert (
        "no-such-package-anywhere"
        in (app.settings.data_dir / "submissions" / sub_id / "logs" / "build.log").read_text()
    )

    slow = stdlib_repo(tmp_path / "slow", '[processes.web]\ncommand = "python main.py"\n')
    shutil.copytree(redis_lua_repo / "wheels", slow / "wheels")
    (slow / "requirements.txt").write_text(
        "--no-index\n--find-links wheels\naiohttp\nredis\n# slow\n"
    )
    sub = Submission.create(app.settings.data_dir, work_root=hosted.work_root)
    await sub.fetch(slow)
    with pytest.raises(BuildError, match=r"killed: wall time 1 s"):
        await sub.build(timeout_s=1)
    await sub.cleanup()
