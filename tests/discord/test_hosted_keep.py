"""/submit with ``keep``, through the real discord.py client and the fake Discord, on the real
sandbox: the learner's code still answers after its grade, they are told until when by DM, and
the environment's teardown stops it. The grade itself is a health check (real grades are
tests/hosted's): what is proven here is keeping the code running, and stopping it."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from bot.adapters.discord.client import CruscibleClient
from bot.app import App, url_policy
from bot.core.grader import Graded
from bot.core.hosted import HostedGrader
from bot.store import Submission
from grading.report import Report
from provisioning.hosted.submission import Submission as HostedSubmission
from tests.discord.fake import GRACE, FakeDiscord
from tests.discord.test_hosted_submit import tarball
from tests.support.sandbox import ensure_bubblewrap

WEB = Path(__file__).resolve().parent.parent / "fixtures" / "hosted" / "stdlib_web.py"


class HealthGrader:
    """Grades a URL by one ``GET /healthz``: 100 when it answers 200."""

    async def grade(
        self, challenge: Any, url: str, out_dir: Path, *, seed: int, env: Any = None, **_: Any
    ) -> Graded:
        async with aiohttp.ClientSession() as http, http.get(f"{url}/healthz") as resp:
            ok = resp.status == 200
        report = Report(challenge.id, url, env.id if env else None, seed, 100 * ok, ok)
        out_dir.mkdir(parents=True, exist_ok=True)
        return Graded(report, out_dir, [])


@pytest.fixture
def work_root() -> Iterator[Path]:
    reason = ensure_bubblewrap()
    if reason:
        pytest.skip(f"sandboxes cannot run here: {reason}")
    path = Path(tempfile.mkdtemp(prefix="ck-", dir="/tmp"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def answers(url: str) -> bool:
    try:
        timeout = aiohttp.ClientTimeout(total=3)
        async with aiohttp.ClientSession(timeout=timeout) as http, http.get(f"{url}/healthz") as r:
            return r.status == 200
    except (aiohttp.ClientError, OSError, TimeoutError):
        return False


async def test_kept_code_answers_after_its_grade_until_the_environment_is_torn_down(
    bot: CruscibleClient,
    fake: FakeDiscord,
    app: App,
    work_root: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hosted = HostedGrader(
        HealthGrader(),  # type: ignore[arg-type]
        app.settings.data_dir,
        url_policy(app.settings),
        work_root=work_root,
    )
    monkeypatch.setattr(app.coach, "hosted", hosted)
    aid, resolved = fake.attach("limiter.tar.gz", tarball({"main.py": WEB.read_text()}))
    since = len(fake.calls)
    command = fake.slash(
        "submit", who=GRACE, resolved=resolved, code=aid, challenge="rate-limiter", keep=True
    )
    await fake.interact(command)
    [told] = await fake.wait_for(
        lambda: [c for c in fake.calls[since:] if fake.is_dm(c) and "keeps running" in c.text()],
        within=120,
    )
    async with asyncio.timeout(30):  # the grade is recorded right after
        while True:
            async with app.coach.store.session() as s:
                sub = await s.scalar(select(Submission).order_by(Submission.id.desc()))
            if sub is not None and sub.status != "running":
                break
            await asyncio.sleep(0.1)
    assert sub is not None and sub.keep and (sub.status, sub.score) == ("done", 100), sub.error
    record = HostedSubmission.open(app.settings.data_dir, sub.logs_ref or "")
    meta = record.meta()
    env_id, url = meta["environment"], meta["url"]
    assert env_id in told.text() and "UTC" in told.text()
    assert await answers(url)  # the grade is over; the code still runs
    await app.provisioner.get(env_id)  # the fresh environment is kept with it
    assert ", wall " in meta["isolation"]["limits"]  # and ends at its TTL in any case

    await app.coach.destroy_environment(env_id)
    assert not await answers(url)
    assert record.meta()["status"] == "finished" and not record.work.exists()
    assert (record.logs_dir / "web-0.log").is_file()
