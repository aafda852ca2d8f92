"""Real hosted code through the coach's grading queue: an archive attached in chat (stored under
the data dir as the adapters store it) is built, run next to the learner's environment, graded,
recorded as hosted with its logs id, published, and removed; a hostile one (memory without
bound) is stopped at the memory limit, which the learner's private message names, with its
full logs attached and masked, and the environment unharmed."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from bot.app import App
from bot.core.errors import CoachError
from bot.core.hosted import HostedGrader
from bot.core.outbox import Actor
from bot.core.sources import Upload
from provisioning import Environment
from provisioning.hosted.submission import env_secrets
from tests.support.outbox import RecordingOutbox

pytestmark = pytest.mark.slow

LEARNER = Actor("console", "hosted-rl", "hosted-rl")  # the owner of the rate_env fixture


def attached_zip(repo: Path, data_dir: Path) -> Path:
    """The repository zipped (one top folder, as forges serve it) and stored as an upload."""
    upload = Upload(data_dir, "limiter.zip")
    scratch = data_dir / "uploads" / "building.zip"
    with zipfile.ZipFile(scratch, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(repo.rglob("*")):
            if path.is_file():
                zf.write(path, f"limiter-main/{path.relative_to(repo)}")
    upload.write(scratch.read_bytes())
    scratch.unlink()
    return upload.close()


async def test_attached_code_is_graded_hosted_through_the_queue(
    app: App,
    hosted: HostedGrader,
    rate_env: Environment,
    redis_lua_repo: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(app.coach, "hosted", hosted)
    archive = attached_zip(redis_lua_repo, app.settings.data_dir)
    box = RecordingOutbox()
    done = await app.coach.submit(
        LEARNER, "rate-limiter", "limiter.zip", box, archive=archive, seed=7
    )
    assert (done.status, done.kind, done.hosted) == ("done", "code", True), done.error
    assert done.passed and done.report is not None
    assert done.report["metrics"]["accuracy.over_admitted"] == 0
    assert done.report["target"].startswith(f"{done.logs_ref} (hosted, http://127.0.0.1:")
    assert done.environment == rate_env.id  # next to the learner's own environment
    assert not archive.exists()
    assert any("scored" in m.title for _, _, m in box.posts)  # the score card, published
    public = box.public_text()
    assert not [s for s in env_secrets(rate_env) if s and s in public]


HOG = """import os
print("allocating next to", os.environ["REDIS_URL"], flush=True)
hog = []
while True:
    hog.append(b"x" * (16 << 20))  # written, so resident: the cgroup counts it
"""


async def test_a_memory_hog_is_stopped_and_the_learner_is_told_the_memory_limit(
    app: App,
    hosted: HostedGrader,
    rate_env: Environment,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(app.coach, "hosted", hosted)
    repo = tmp_path / "hog"
    repo.mkdir()
    (repo / "main.py").write_text(HOG)
    archive = attached_zip(repo, app.settings.data_dir)
    box = RecordingOutbox()
    with pytest.raises(CoachError, match=r"killed: memory limit 512 MB"):
        await app.coach.submit(LEARNER, "rate-limiter", "limiter.zip", box, archive=archive)
    [told] = [m for _, m in box.dms if "start failed" in m.title]
    assert "web[0]: killed: memory limit 512 MB" in told.body
    assert "web-0.log" in [f.name for f in told.files]
    web = next(f for f in told.files if f.name == "web-0.log").read_text()
    assert "allocating next to •••" in web  # the bundle URL, masked
    shown = told.text() + "".join(f.read_text() for f in told.files) + box.public_text()
    assert not [s for s in env_secrets(rate_env) if s and s in shown]
    assert not archive.exists()
    health = await app.provisioner.health(rate_env.id)  # nothing else harmed
    assert all(h.ok for h in health), health
