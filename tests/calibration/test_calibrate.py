"""A worker measures what it sustains, on a real environment with real grades, and grades
at that rate afterwards, saying so in the report.

The challenge is docs/authoring.md's counter (floor 100 increments/s, stated 1,000/s), with
one more reference design that tops out near 500 increments/s whatever the host: one request
at a time, 2 ms each, in front of Redis. The baselines name it the fastest, so it is the
design measured: the stated rate cannot be sustained, and the rate found lies below it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bot.app import App
from bot.core.calibration import CalibrationStore, Trial, calibrate
from bot.core.outbox import Actor
from bot.core.scale import LoadScales
from challenges.catalog import Challenge
from challenges.launch import running
from grading.report import Status

pytestmark = pytest.mark.slow
EXAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "challenges" / "counter"
CAPPED = '''"""Counter design "capped": redis_incr served one request at a time, 2 ms each."""

import asyncio

from aiohttp import web

from challenges.service import run

from ..redis_incr.__main__ import build as build_redis

SERVICE_S = 0.002


def build(env):
    app = build_redis(env)
    lane = asyncio.Lock()

    @web.middleware
    async def one_lane(request, handler):
        if request.path == "/healthz":
            return await handler(request)
        async with lane:
            await asyncio.sleep(SERVICE_S)
            return await handler(request)

    app.middlewares.append(one_lane)
    return app


if __name__ == "__main__":
    run("counter/capped", build, required_env=["REDIS_URL"])
'''


@pytest.fixture
def counter(tmp_path: Path) -> Challenge:
    folder = tmp_path / "challenges" / "counter"
    shutil.copytree(EXAMPLE, folder)
    capped = folder / "solutions" / "capped"
    capped.mkdir()
    (capped / "__init__.py").write_text('"""Counter design "capped"."""\n')
    (capped / "__main__.py").write_text(CAPPED)
    baselines = json.loads((folder / "baselines.json").read_text())
    fastest = {**baselines["redis_incr"], "metrics": {**baselines["redis_incr"]["metrics"]}}
    fastest["metrics"]["load.p99_ms"] = 0.5
    baselines["capped"] = fastest
    (folder / "baselines.json").write_text(json.dumps(baselines))
    return Challenge.load(folder)


async def test_a_worker_grades_at_the_rate_it_measured_and_says_so(
    app: App, counter: Challenge, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = CalibrationStore(tmp_path / "data", host="test-worker")
    monkeypatch.setattr(app.coach.grader, "scales", LoadScales("measured", store))
    before = app.coach.grader.scales.for_challenge(counter)
    assert (before.rate, before.basis) == (100, "unmeasured")

    heard: list[Trial] = []
    found = await calibrate(
        app.coach, counter, tmp_path / "reports", tries=1, steps=1, said=heard.append
    )
    assert found.reference == "capped"
    assert (found.floor_rate, found.stated_rate, found.host) == (100, 1000, "test-worker")
    assert heard == found.trials
    first = found.trials[0]
    # 1,000 increments/s against ~500/s of service: the queue grows, a load check fails
    assert (first.rate, first.sustained) == (1000, False)
    assert first.why.startswith("load."), first.why
    assert [t.rate for t in found.trials][:2] == [1000, 316]
    assert 100 <= found.sustained_rate < 1000
    # the rate found is the highest sustained; every rate above it was not
    assert all(t.sustained == (t.rate <= found.sustained_rate) for t in found.trials)
    assert store.get(counter) == found  # kept for this host and this version

    # The next grade on this worker runs at that rate, and its report says why.
    env = await app.coach.create_environment(
        Actor("test", "calibration", "c"), counter.environment_spec("test:calibration")
    )
    try:
        module = counter.solution("redis_incr").module
        async with running(module, env.bundle, cwd=counter.import_root) as service:
            graded = await app.coach.grader.grade(
                counter, service.url, tmp_path / "graded", seed=3, env=env
            )
    finally:
        await app.coach.destroy_environment(env.id)
    scale = graded.report.scale
    assert (scale.rate, scale.stated_rate, scale.basis) == (found.sustained_rate, 1000, "measured")
    assert "below the stated 1,000/s" in scale.note and "capped" in scale.note
    latency = graded.report.check("load.latency")
    assert latency.title.endswith(f"at {found.sustained_rate:g} increments/s")
    assert latency.status == Status.PASS, latency.detail
    assert json.loads((tmp_path / "graded" / "report.json").read_text())["scale"]["basis"] == (
        "measured"
    )
    assert "below the stated 1,000/s" in (tmp_path / "graded" / "report.md").read_text()
