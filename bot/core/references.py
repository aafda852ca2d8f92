"""Grading a challenge's reference designs: ``challenges validate`` and stored baselines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bot.core.coach import Coach
from bot.core.grader import Graded
from bot.core.outbox import Actor
from challenges.catalog import Challenge
from challenges.launch import running
from grading.report import Report
from grading.scenario import Progress

REFEREE = Actor("console", "referee", "referee")
BASELINE_SEED = 1234


async def grade_references(
    coach: Coach,
    challenge: Challenge,
    out_dir: Path,
    *,
    seed: int = BASELINE_SEED,
    progress: Progress | None = None,
) -> dict[str, Graded]:
    """Grade every reference design, each in a fresh environment of its own."""
    graded: dict[str, Graded] = {}
    for solution in challenge.solutions:
        spec = challenge.environment_spec(coach.owner(REFEREE))
        env = await coach.create_environment(REFEREE, spec)
        try:
            async with running(solution.module, env.bundle, cwd=challenge.import_root) as svc:
                graded[solution.name] = await coach.grader.grade(
                    challenge,
                    svc.url,
                    out_dir / solution.name,
                    seed=seed,
                    env=env,
                    progress=progress,
                )
        finally:
            await coach.destroy_environment(env.id)
    return graded


def baseline(report: Report) -> dict[str, Any]:
    """What the discussion compares a learner with: score, metrics, resources used."""
    return {
        "score": report.score,
        "passed": report.passed,
        "seed": report.seed,
        "metrics": report.metrics,
        "resources_used": report.architecture.resources_used,
    }


def write_baselines(challenge: Challenge, graded: dict[str, Graded]) -> Path:
    path = challenge.path / "baselines.json"
    data = {name: baseline(g.report) for name, g in sorted(graded.items())}
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path
