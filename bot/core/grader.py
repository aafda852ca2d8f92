"""Grades a URL against a challenge and writes the report files."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from challenges.catalog import Challenge
from grading.render import write_report
from grading.report import Report
from grading.runner import GradeOutcome, grade
from grading.scenario import Progress
from grading.urlguard import Policy
from provisioning import Environment, FaultAction, Resource
from provisioning.manager import Provisioner

log = logging.getLogger(__name__)


@dataclass
class Graded:
    report: Report
    out_dir: Path
    files: list[Path]


class Grader:
    def __init__(self, provisioner: Provisioner, policy: Policy) -> None:
        self.provisioner = provisioner
        self.policy = policy

    async def grade(
        self,
        challenge: Challenge,
        url: str,
        out_dir: Path,
        *,
        seed: int,
        env: Environment | None = None,
        progress: Progress | None = None,
    ) -> Graded:
        """Grade ``url``; raises ``grading.runner.CannotGrade`` when it cannot be graded."""
        injector = None
        if env is not None:
            env_id = env.id

            async def injector(resource: str, action: str):  # type: ignore[no-untyped-def]
                return await self.provisioner.fault(env_id, Resource(resource), FaultAction(action))

        outcome: GradeOutcome = await grade(
            challenge.scenario(),
            challenge.grade_config(),
            url,
            seed=seed,
            env=env,
            injector=injector,
            policy=self.policy,
            progress=progress,
            discuss=challenge.discussion,
        )
        out_dir.mkdir(parents=True, exist_ok=True)
        files = await asyncio.to_thread(
            write_report, outcome.report, out_dir, timeline=outcome.timeline
        )
        return Graded(outcome.report, out_dir, files)
