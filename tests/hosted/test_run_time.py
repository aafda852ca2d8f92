"""The run's wall-time cap: the challenge's ``hosted.run_s``, else the environment's TTL,
enforced by the box through the real run path, with a message that says which cap fired."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bot.app import App
from bot.core.hosted import HostedGrader
from challenges.catalog import Challenge
from provisioning import Environment
from provisioning.hosted.service import WALL_TIME_NOTE, run_wall_s
from provisioning.hosted.submission import env_secrets
from provisioning.sandbox import Limits

from .test_pipeline import stdlib_repo


def capped(challenge: Challenge, run_s: float) -> Challenge:
    """``challenge`` with ``hosted.run_s`` set, as a challenge.yaml would set it."""
    hosted = challenge.spec.hosted.model_copy(update={"run_s": run_s})
    return Challenge(challenge.path, challenge.spec.model_copy(update={"hosted": hosted}))


def test_the_run_ends_with_the_environment_unless_the_challenge_caps_it_sooner(
    rate_env: Environment,
) -> None:
    now = rate_env.expires_at - timedelta(seconds=600)
    assert run_wall_s(Limits(), rate_env, now) == 600  # default: the environment's TTL
    assert run_wall_s(Limits(wall_s=30), rate_env, now) == 30  # hosted.run_s
    assert run_wall_s(Limits(wall_s=3600), rate_env, now) == 600  # never beyond the TTL
    assert run_wall_s(Limits(), rate_env, now - timedelta(seconds=0.7)) == 600  # whole seconds
    assert run_wall_s(Limits(), rate_env, rate_env.expires_at + timedelta(1)) == 1.0


async def test_a_service_past_the_challenges_run_time_is_stopped_and_told_why(
    app: App, hosted: HostedGrader, rate_env: Environment, tmp_path: Path
) -> None:
    challenge = capped(app.catalog.get("rate-limiter"), 3)
    repo = stdlib_repo(tmp_path / "ok", '[processes.web]\ncommand = "python main.py"\n')
    sub, _ = await hosted.prepare(repo, challenge)
    service = await hosted.start(sub, challenge, rate_env)
    try:
        assert "wall 3 s" in service.box.isolation["limits"]
        assert datetime.now(UTC) < rate_env.expires_at - timedelta(minutes=5)
        async with asyncio.timeout(60):  # bounded: 3 s expected, more on a busy machine
            while not service.stopped():  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        [stopped] = service.stopped()
        assert stopped.reason == "killed: wall time 3 s"
        told = service.describe([stopped])  # what the learner gets (crash_report)
        assert told.startswith(f"web[0]: killed: wall time 3 s ({WALL_TIME_NOTE})")
    finally:
        await sub.finish(service, env_secrets(rate_env))
