"""Grading submitted code: fetch, build and run it in a sandbox next to the learner's
environment, then grade the balancer's URL exactly like a URL.

Coach-independent: the CLI (``cruscible submit``) and the chat adapters (an attachment or a git
URL) call :meth:`HostedGrader.grade_code` with an environment they already have.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bot.core.errors import CoachError
from bot.core.grader import Graded, Grader
from challenges.catalog import ROOT as CATALOG_ROOT
from challenges.catalog import Challenge
from grading.render import write_report
from grading.report import Check, LoadScale, Status
from grading.scenario import Progress
from grading.urlguard import Policy, TargetRefused, resolve_target
from provisioning import Environment
from provisioning.hosted import wheels
from provisioning.hosted.balancer import BalancerError
from provisioning.hosted.build import BuildError, Built
from provisioning.hosted.manifest import MANIFEST, ManifestError
from provisioning.hosted.service import HostedService, NotReady
from provisioning.hosted.sources import SourceError
from provisioning.hosted.submission import Submission, env_secrets
from provisioning.sandbox import Box, ProcessState, SandboxError

log = logging.getLogger(__name__)

LogSink = Callable[[str], None]
REFERENCE_REQUIREMENTS = [
    "aiohttp",
    "uvloop",
    "redis",
    "psycopg[binary]",
    "psycopg-pool",
    "nats-py",
]
CRASH_CHECK = "hosted.processes"


class HostedError(CoachError):
    """The code could not be fetched, built or started; ``str()`` says why, with log lines;
    ``submission``: the id of its record (its kept logs), when one was made."""

    def __init__(self, message: str, submission: str | None = None) -> None:
        super().__init__(message)
        self.submission = submission


@dataclass
class HostedGraded:
    """A graded submission of code. ``crashed``: replicas that stopped during the grade, with
    ``crash_report`` their reasons and last log lines (masked); ``timings`` in seconds:
    ``fetch``, ``build`` and ``to_first_request`` (from the submission to every web replica
    answering ``/healthz``, when the grader can send its first request)."""

    submission: Submission
    graded: Graded
    built: Built
    url: str
    crashed: list[ProcessState] = field(default_factory=list)
    crash_report: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    service: HostedService | None = None  # still running when kept


class HostedGrader:
    """Grades code. ``allow_local_git`` (tests only) accepts a local repository path as git."""

    def __init__(
        self,
        grader: Grader,
        data_dir: Path,
        policy: Policy,
        *,
        work_root: Path | None = None,
        allow_local_git: bool = False,
    ) -> None:
        self.grader = grader
        self.data_dir = data_dir
        self.policy = policy
        self.work_root = work_root
        self.allow_local_git = allow_local_git

    async def check_git_host(self, host: str, port: int) -> str:
        """The URL guard's decision on a git host: the address to pin, or ``TargetRefused``."""
        netloc = f"[{host}]" if ":" in host else host
        try:
            target = await resolve_target(f"https://{netloc}:{port}/", self.policy)
        except TargetRefused as exc:
            raise ValueError(str(exc)) from None
        return target.ip

    async def prepare(
        self, source: str | Path, challenge: Challenge, *, scope: str = "", say: LogSink = log.info
    ) -> tuple[Submission, Built]:
        """Fetch and build ``source``; raises :class:`HostedError` (the submission's work
        directory is removed then, its record kept)."""
        unavailable = Box.available()
        if unavailable:
            raise HostedError(f"submissions of code cannot run on this host: {unavailable}")
        sub = Submission.create(
            self.data_dir, work_root=self.work_root, challenge=challenge.id, source=str(source)
        )
        try:
            started = time.monotonic()
            say(f"{sub.id}: fetching {source}")
            manifest = await sub.fetch(
                source, check=self.check_git_host, allow_local_git=self.allow_local_git
            )
            fetched = time.monotonic() - started
            procs = ", ".join(f"{p.name}×{p.replicas}" for p in manifest.processes)
            what = manifest.build_file or "no requirements"
            say(f"{sub.id}: building ({what}; processes {procs})")
            built = await sub.build(scope=scope)
            say(f"{sub.id}: built in {built.seconds:.1f} s" + (" (cached)" if built.cached else ""))
            sub.update(fetch_s=round(fetched, 2))
            return sub, built
        except (SourceError, ManifestError, BuildError, SandboxError, OSError) as exc:
            sub.update(status="failed", error=str(exc).splitlines()[0])
            await sub.cleanup()
            raise HostedError(str(exc), sub.id) from None
        except BaseException:
            sub.update(status="failed")
            await sub.cleanup()
            raise

    async def start(
        self, sub: Submission, challenge: Challenge, env: Environment, *, say: LogSink = log.info
    ) -> HostedService:
        """Run the built submission next to ``env`` under the challenge's caps."""
        say(f"{sub.id}: starting next to {env.id}")
        try:
            service = await sub.run(env, limits=challenge.spec.hosted.limits())
        except (NotReady, SandboxError, BalancerError, ValueError, OSError) as exc:
            await sub.finish(None, env_secrets(env))
            raise HostedError(str(exc), sub.id) from None
        say(f"{sub.id}: ready at {service.url} ({service.box.isolation.get('cgroup', '?')} caps)")
        return service

    async def grade_code(
        self,
        challenge: Challenge,
        source: str | Path,
        env: Environment,
        *,
        seed: int,
        out_dir: Path | None = None,
        scope: str = "",
        keep: bool = False,
        progress: Progress | None = None,
        say: LogSink = log.info,
    ) -> HostedGraded:
        """Fetch, build, run and grade ``source`` against ``env``.

        Raises :class:`HostedError` when the code cannot be fetched, built or started (the
        message carries the build's or each process's last log lines, secrets masked), and
        ``grading.runner.CannotGrade`` as a URL grade does. With ``keep`` the service keeps
        running (``HostedGraded.service``; stop it with ``finish``).
        """
        t0 = time.monotonic()
        sub, built = await self.prepare(source, challenge, scope=scope, say=say)
        return await self.grade_prepared(
            sub,
            built,
            challenge,
            env,
            seed=seed,
            out_dir=out_dir,
            keep=keep,
            progress=progress,
            say=say,
            started=t0,
        )

    async def grade_prepared(
        self,
        sub: Submission,
        built: Built,
        challenge: Challenge,
        env: Environment,
        *,
        seed: int,
        out_dir: Path | None = None,
        keep: bool = False,
        progress: Progress | None = None,
        say: LogSink = log.info,
        started: float | None = None,
        scale: LoadScale | None = None,
    ) -> HostedGraded:
        """Run and grade a submission :meth:`prepare` built (so that bad input is refused
        before an environment is made for it); see :meth:`grade_code`. ``started``: the
        ``time.monotonic()`` of the submission, for ``timings["to_first_request"]``."""
        t0 = time.monotonic() if started is None else started
        service = await self.start(sub, challenge, env, say=say)
        ready = time.monotonic() - t0
        secrets = env_secrets(env)
        try:
            target = out_dir or sub.record / "report"
            graded = await self.grader.grade(
                challenge,
                service.url,
                target,
                seed=seed,
                env=env,
                progress=progress,
                scale=scale,
                service=service,
            )
            crashed = service.stopped()
            crash_report = service.describe(crashed) if crashed else ""
            if crashed:
                _add_crash_check(graded, crashed, crash_report)
            graded.report.target = f"{sub.id} (hosted, {service.url})"
            await asyncio.to_thread(write_report, graded.report, graded.out_dir)
        except BaseException:
            await sub.finish(service, secrets)
            raise
        timings = {
            "fetch": float(sub.meta().get("fetch_s", 0.0)),
            "build": built.seconds,
            "to_first_request": ready,
        }
        sub.update(
            status="graded",
            score=graded.report.score,
            passed=graded.report.passed,
            report=str(graded.out_dir),
        )
        result = HostedGraded(sub, graded, built, service.url, crashed, crash_report, timings)
        if keep:
            result.service = service
            sub.keep_logs(secrets)
        else:
            await sub.finish(service, secrets)
        return result


def _add_crash_check(graded: Graded, crashed: list[ProcessState], report: str) -> None:
    names = ", ".join(f"{s.name}[{s.replica}] {s.reason}" for s in crashed)
    graded.report.checks.append(
        Check(
            id=CRASH_CHECK,
            title="Every process stayed up during the grade",
            status=Status.WARN,
            points=0,
            max_points=0,
            detail=f"stopped during the grade: {names}",
            evidence={"log_tail": report},
        )
    )


def package_reference(challenge: Challenge, design: str, dest: Path, *, replicas: int = 1) -> Path:
    """Write reference design ``design`` of ``challenge`` as a learner's repository in ``dest``
    (:func:`package_design`)."""
    solution = challenge.solution(design)  # ChallengeError when unknown
    package = challenge.path / "solutions" / design
    return package_design(challenge, solution.module, package, dest, replicas=replicas)


def package_design(
    challenge: Challenge, module: str, package: Path, dest: Path, *, replicas: int = 1
) -> Path:
    """Write the design in folder ``package`` (importable as ``module``) as a learner's
    repository in ``dest``: ``challenges/service.py`` and the challenge's ``solutions``, the
    package at ``module``'s place when it lives elsewhere (a test's design), ``requirements.txt``
    installing offline from a ``wheels/`` folder of the very packages that run here (no registry
    needed), and ``cruscible.toml``: the package's own ``cruscible.toml`` when it has one (its
    processes, e.g. ``web`` and ``worker``; ``{module}`` in it stands for ``module``), else
    ``python -m <module>`` as ``web``, ``replicas`` times. Raises ``ValueError`` for a challenge
    outside the catalog folder."""
    if challenge.path.parent != CATALOG_ROOT:
        raise ValueError(f"{challenge.id} is not in the catalog folder")
    pkg = dest / "challenges"
    pkg.mkdir(parents=True, exist_ok=True)
    shutil.copy(CATALOG_ROOT / "__init__.py", pkg / "__init__.py")
    shutil.copy(CATALOG_ROOT / "service.py", pkg / "service.py")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(
        challenge.path / "solutions", pkg / challenge.path.name / "solutions", ignore=ignore
    )
    place = dest.joinpath(*module.split("."))
    if not place.exists():
        shutil.copytree(package, place, ignore=ignore)
        for parent in place.relative_to(dest).parents:
            if parent != Path("."):
                (dest / parent / "__init__.py").touch()
    own = package / MANIFEST
    manifest = (
        own.read_text().replace("{module}", module)
        if own.is_file()
        else f'[processes.web]\ncommand = "python -m {module} --port $PORT"\nreplicas = {replicas}\n'
    )
    (dest / MANIFEST).write_text('[build]\npython = "requirements.txt"\n\n' + manifest)
    (place / MANIFEST).unlink(missing_ok=True)
    wheels.vendor(REFERENCE_REQUIREMENTS, dest / "wheels")
    (dest / "requirements.txt").write_text(
        "--no-index\n--find-links wheels\n" + "".join(f"{r}\n" for r in REFERENCE_REQUIREMENTS)
    )
    return dest
