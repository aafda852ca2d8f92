"""Grades a URL against a challenge and writes the report files."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from bot.core.scale import LoadScales
from challenges.catalog import Challenge
from grading.render import write_report
from grading.report import LoadScale, Report
from grading.runner import GradeOutcome, grade
from grading.scenario import Progress
from grading.urlguard import Policy
from provisioning import Environment, FaultAction, FaultRecord, Resource
from provisioning.faults import process_target
from provisioning.hosted.service import HostedService
from provisioning.manager import Provisioner

log = logging.getLogger(__name__)


@dataclass
class Graded:
    report: Report
    out_dir: Path
    files: list[Path]


class Grader:
    def __init__(self, provisioner: Provisioner, policy: Policy, scales: LoadScales) -> None:
        self.provisioner = provisioner
        self.policy = policy
        self.scales = scales  # the load rate of each grade on this worker

    async def grade(
        self,
        challenge: Challenge,
        url: str,
        out_dir: Path,
        *,
        seed: int,
        env: Environment | None = None,
        progress: Progress | None = None,
        scale: LoadScale | None = None,
        service: HostedService | None = None,
    ) -> Graded:
        """Grade ``url``; raises ``grading.runner.CannotGrade`` when it cannot be graded.

        The load runs at ``scale.rate`` (default: what :attr:`scales` chooses on this worker);
        the report's ``scale`` says which rate and why. ``service``: the hosted submission
        ``url`` reaches, whose processes the challenge's ``process:<name>`` faults kill and
        start (without it, those faults are skipped with the reason)."""
        scale = scale or self.scales.for_challenge(challenge)
        if scale.rate is not None:
            challenge = challenge.at_rate(scale.rate)
        injector = None
        if env is not None:
            env_id = env.id
            restored = await self.provisioner.restore(env_id)
            if restored:  # a grade interrupted mid-fault (its worker killed) left them down
                log.warning("%s brought back before grading: %s", env_id, ", ".join(restored))

            async def injector(target: str, action: str) -> FaultRecord:
                process = process_target(target)
                if process is None:
                    return await self.provisioner.fault(
                        env_id, Resource(target), FaultAction(action)
                    )
                if service is None:
                    raise RuntimeError(f"no hosted service to {action} {process} in")
                return await service.fault(process, FaultAction(action))

        outcome: GradeOutcome = await grade(
            challenge.scenario(),
            challenge.grade_config(scale),
            url,
            seed=seed,
            env=env,
            injector=injector,
            policy=self.policy,
            progress=progress,
            discuss=challenge.discussion,
            processes=service.process_names if service is not None else None,
        )
        out_dir.mkdir(parents=True, exist_ok=True)
        files = await asyncio.to_thread(
            write_report, outcome.report, out_dir, timeline=outcome.timeline
        )
        return Graded(outcome.report, out_dir, files)
