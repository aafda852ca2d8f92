"""The example challenge of docs/authoring.md grades end to end: its reference designs pass
against a real environment, each faulted only where it keeps its counts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.app import App
from bot.core.outbox import Actor
from challenges.catalog import Challenge
from challenges.launch import running
from grading.report import Status
from provisioning import Environment
from tests.challenges.grading import failures

pytestmark = pytest.mark.slow
EXAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "challenges" / "counter"


@pytest.fixture(scope="module")
def challenge() -> Challenge:
    return Challenge.load(EXAMPLE)


@pytest.fixture(scope="module")
async def env(app: App, challenge: Challenge) -> AsyncIterator[Environment]:
    spec = challenge.environment_spec("test:authoring")
    environment = await app.coach.create_environment(Actor("test", "authoring", "a"), spec)
    yield environment
    await app.coach.destroy_environment(environment.id)


@pytest.mark.parametrize(
    ("design", "store"), [("redis_incr", "redis"), ("postgres_upsert", "postgres")]
)
async def test_the_example_reference_design_passes(
    app: App, challenge: Challenge, env: Environment, tmp_path: Path, design: str, store: str
) -> None:
    module = challenge.solution(design).module
    async with running(module, env.bundle, cwd=challenge.import_root) as service:
        graded = await app.coach.grader.grade(challenge, service.url, tmp_path, seed=5, env=env)
    report = graded.report
    assert report.passed, failures(report)
    assert report.check("accuracy.no-lost-increment").status == Status.PASS
    assert report.metrics["accuracy.lost_increments"] == 0
    assert report.metrics["verify.lost_acknowledged"] == 0
    assert report.architecture.resources_used == [store]
    # ``if_used``: only the store the design uses was taken away, and it recovered
    assert {f.resource for f in report.faults} == {store}
    assert report.check("faults.recovery").status == Status.PASS
    assert "Your counts live in" in report.discussion
