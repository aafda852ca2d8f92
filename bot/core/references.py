"""Grading a challenge's reference designs: ``challenges validate`` and stored baselines."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from bot.core.coach import Coach
from bot.core.errors import CoachError
from bot.core.grader import Graded
from bot.core.hosted import package_reference
from bot.core.outbox import Actor
from challenges.catalog import Challenge, Solution
from challenges.launch import running
from grading.report import LoadScale, Report
from grading.scenario import Progress
from provisioning import Environment
from provisioning.hosted.manifest import MANIFEST

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
    """Grade every reference design, each in a fresh environment of its own, at the
    challenge's floor rate on every host (baselines compare across hosts)."""
    spec = challenge.spec
    floor = LoadScale(
        spec.grading.rate,
        spec.stated_load_rate,
        "floor",
        "reference designs are graded at the floor rate on every host",
    )
    return {
        solution.name: await grade_reference(
            coach,
            challenge,
            solution,
            out_dir / solution.name,
            seed=seed,
            scale=floor,
            progress=progress,
        )
        for solution in challenge.solutions
    }


async def grade_reference(
    coach: Coach,
    challenge: Challenge,
    solution: Solution,
    out_dir: Path,
    *,
    seed: int,
    scale: LoadScale,
    progress: Progress | None = None,
) -> Graded:
    """Grade one reference design in a fresh environment of its own, its load at ``scale``.
    A design whose package holds a ``cruscible.toml`` (its processes, e.g. a web and a worker) is
    graded as hosted code, as a learner's would be; any other is started here and graded by URL.
    """
    spec = challenge.environment_spec(coach.owner(REFEREE))
    env = await coach.create_environment(REFEREE, spec)
    try:
        if (challenge.path / "solutions" / solution.name / MANIFEST).is_file():
            return await _grade_hosted(
                coach, challenge, solution, env, out_dir, seed, scale, progress
            )
        async with running(solution.module, env.bundle, cwd=challenge.import_root) as svc:
            return await coach.grader.grade(
                challenge,
                svc.url,
                out_dir,
                seed=seed,
                env=env,
                progress=progress,
                scale=scale,
            )
    finally:
        await coach.destroy_environment(env.id)


async def _grade_hosted(
    coach: Coach,
    challenge: Challenge,
    solution: Solution,
    env: Environment,
    out_dir: Path,
    seed: int,
    scale: LoadScale,
    progress: Progress | None,
) -> Graded:
    """Package ``solution`` as a learner's repository, build it, run it next to ``env`` and
    grade it (:class:`bot.core.hosted.HostedGrader`); ``CoachError`` when this host runs no
    hosted code."""
    if coach.hosted is None:
        raise CoachError(f"{challenge.id}/{solution.name} runs as hosted code: not on this host")
    with tempfile.TemporaryDirectory(prefix="reference-") as tmp:
        repo = package_reference(challenge, solution.name, Path(tmp) / "repo")
        sub, built = await coach.hosted.prepare(repo, challenge, scope="references")
    result = await coach.hosted.grade_prepared(
        sub, built, challenge, env, seed=seed, out_dir=out_dir, progress=progress, scale=scale
    )
    return result.graded


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
