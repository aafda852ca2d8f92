"""What load rate this host sustains for a challenge, measured with a reference design.

A challenge states its scale (``scale.rate``; ``grading.stated_rate`` in the load's own
requests/s) and a floor every worker grades at (``grading.rate``). A worker that sustains the
stated rate should grade at it; one that does not grades at the highest rate it found
sustained, and says so in the report (:mod:`bot.core.scale`). *Sustained* is judged by the
grade itself: a reference design (``grading.reference``, else the lowest p99 among the
challenge's passing baselines) is graded at the rate, on this host, with its stores and the
grader's load generator beside it; it must pass (its gates: a rate at which the host makes it
lose data is not sustained) with every ``load.*`` check passing (a threshold missed, or the
load generator falling behind its schedule, is not; see :meth:`grading.scenario.Grade.judge`).
A measurement is of one grade alone on the host.

The ladder: the stated rate first; if it is not sustained, a geometric bisection between the
floor and the stated rate (``steps`` rates: the rate found is within a step of the highest).
A rate is sustained only when every one of ``tries`` grades at it is: a learner graded there
must not fail on the host's account. The result is kept per host and challenge in
``<data_dir>/calibration/<host>/<challenge>.json`` and holds while the challenge's files, the
grading engine, the backend and the CPUs are those it was measured with (:func:`fingerprint`).
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import hashlib
import json
import logging
import math
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import grading
from challenges.catalog import Challenge, Solution
from grading.report import LoadScale, Report, Status

if TYPE_CHECKING:
    from bot.core.coach import Coach

log = logging.getLogger(__name__)
TRIES = 2
STEPS = 3
BASIS_TRIAL = "trial"


@dataclass(frozen=True)
class Trial:
    """One rate tried: ``sustained`` or not, and the first ``load.*`` check that said no."""

    rate: float
    sustained: bool
    why: str = ""


@dataclass
class Calibration:
    """What one host sustained for one challenge (rates in the load's requests/s)."""

    challenge: str
    host: str
    cpus: int
    fingerprint: str
    reference: str
    floor_rate: float
    stated_rate: float
    sustained_rate: float
    measured_at: str  # ISO 8601, UTC
    trials: list[Trial] = field(default_factory=list)

    @property
    def at_stated_scale(self) -> bool:
        return self.sustained_rate >= self.stated_rate


def host_cpus() -> int:
    """The CPUs this process may run on (its affinity, not the machine's count)."""
    return len(os.sched_getaffinity(0))


def cpu_quota() -> str:
    """This process's cgroup CPU quota (v2 ``cpu.max``, v1 ``cfs_quota_us/cfs_period_us``), or
    ``"none"``: a container's ``--cpus`` that the affinity does not show."""
    for path in (Path("/sys/fs/cgroup/cpu.max"), Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")):
        try:
            quota = path.read_text().split()
        except OSError:
            continue
        if path.name == "cpu.max":
            return "none" if quota[0] == "max" else "/".join(quota)
        if quota[0] == "-1":
            return "none"
        period = (path.parent / "cpu.cfs_period_us").read_text().strip()
        return f"{quota[0]}/{period}"
    return "none"


SOURCES = (".py", ".yaml", ".yml", ".toml", ".sql", ".lua", ".txt")


def _tree_digest(root: Path) -> bytes:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.suffix in SOURCES and "__pycache__" not in path.parts and path.is_file():
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.digest()


@functools.cache
def _engine_digest() -> bytes:
    """The grading engine's own code (load generator, runner, checks): read once."""
    return _tree_digest(Path(grading.__file__).parent)


def fingerprint(challenge: Challenge, backend: str) -> str:
    """What a measurement depends on: the challenge's files (statement of load, grader,
    reference designs, provider), the grading engine, the provisioning backend, and the
    CPUs here (affinity and cgroup quota). A change to any makes the measurement stale."""
    digest = hashlib.sha256(_tree_digest(challenge.path) + _engine_digest())
    digest.update(f"backend={backend} cpus={host_cpus()} quota={cpu_quota()}".encode())
    return digest.hexdigest()[:16]


class CalibrationStore:
    """Measurements of this host, one JSON file per challenge, written atomically."""

    def __init__(self, data_dir: Path, host: str | None = None, backend: str = "local") -> None:
        self.host = host or socket.gethostname()  # the name this host gives itself, no lookup
        self.backend = backend  # the provisioning backend the measurement's stores ran on
        self.folder = data_dir / "calibration" / self.host

    def path(self, challenge_id: str) -> Path:
        return self.folder / f"{challenge_id}.json"

    def get(self, challenge: Challenge) -> Calibration | None:
        """The measurement for ``challenge`` on this host, or None (never measured, unreadable,
        or stale: the challenge or the CPUs changed since)."""
        try:
            data = json.loads(self.path(challenge.id).read_text())
            data["trials"] = [Trial(**t) for t in data.get("trials", [])]
            found = Calibration(**data)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:
            log.warning("calibration of %s unreadable, ignored: %s", challenge.id, exc)
            return None
        return found if found.fingerprint == fingerprint(challenge, self.backend) else None

    @asynccontextmanager
    async def measuring(self) -> AsyncIterator[None]:
        """Hold this host's measuring turn (``flock(2)`` on the folder's lock): two workers
        measuring at once would each see the other's load."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / ".lock", "a") as lock:
            await asyncio.to_thread(fcntl.flock, lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def put(self, calibration: Calibration) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.path(calibration.challenge)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(asdict(calibration), indent=2) + "\n")
        os.replace(tmp, path)
        return path


def judge(report: Report, rate: float) -> Trial:
    """Sustained when the reference design's grade passed (its gates: a rate where the host
    makes it lose data is not sustained) and every ``load.*`` check of it passed."""
    load = [c for c in report.checks if c.id.startswith("load.")]
    broken = next((c for c in load if c.status != Status.PASS), None)
    if broken is not None:
        return Trial(rate, False, f"{broken.id} {broken.status.value}: {broken.detail}")
    if not load:
        return Trial(rate, False, "no load check ran")
    if not report.passed:
        first = report.first_failure()
        why = f"{first.id} {first.status.value}: {first.detail}" if first else "did not pass"
        return Trial(rate, False, f"the reference design failed: {why}")
    return Trial(rate, True)


async def ladder(
    floor: float,
    stated: float,
    sustains: Callable[[float], Awaitable[Trial]],
    *,
    steps: int = STEPS,
) -> tuple[float, list[Trial]]:
    """The highest rate found sustained between ``floor`` (assumed) and ``stated``, and the
    trials: ``stated`` first, then up to ``steps`` geometric bisections, whole rates."""
    if stated <= floor:
        return floor, []
    first = await sustains(stated)
    trials = [first]
    if first.sustained:
        return stated, trials
    low, high = floor, stated
    for _ in range(steps):
        mid = float(round(math.sqrt(low * high)))
        if not low < mid < high:
            break
        trial = await sustains(mid)
        trials.append(trial)
        low, high = (mid, high) if trial.sustained else (low, mid)
    return low, trials


def reference(challenge: Challenge) -> Solution:
    """The reference design measured: ``grading.reference``, else the lowest p99 among
    passing baselines, else the first."""
    named = challenge.spec.grading.reference
    if named:
        if named not in {s.name for s in challenge.solutions}:
            raise ValueError(
                f"{challenge.path / 'challenge.yaml'}: grading.reference: no reference design "
                f"solutions/{named}/"
            )
        return challenge.solution(named)
    passing = [
        (float(b["metrics"]["load.p99_ms"]), name)
        for name, b in challenge.baselines.items()
        if b.get("passed") and b.get("metrics", {}).get("load.p99_ms") is not None
    ]
    known = {s.name for s in challenge.solutions}
    passing = [p for p in passing if p[1] in known]
    if passing:
        return challenge.solution(min(passing)[1])
    if not challenge.solutions:
        raise ValueError(f"{challenge.id} has no reference design to measure with")
    return challenge.solutions[0]


async def calibrate(
    coach: Coach,
    challenge: Challenge,
    out_dir: Path,
    *,
    tries: int = TRIES,
    steps: int = STEPS,
    seed: int = 1234,
    said: Callable[[Trial], None] | None = None,
) -> Calibration:
    """Measure ``challenge`` on this host (a grade per try, each in a fresh environment) and
    keep the result in the coach's :class:`CalibrationStore`. ``said`` hears each try."""
    from bot.core.references import grade_reference

    spec = challenge.spec
    floor, stated = spec.grading.rate, spec.stated_load_rate
    design = reference(challenge)

    async def sustains(rate: float) -> Trial:  # every try, or not sustained
        trial = Trial(rate, False, "not tried")
        for attempt in range(tries):
            scale = LoadScale(rate, stated, BASIS_TRIAL)
            graded = await grade_reference(
                coach,
                challenge,
                design,
                out_dir / f"{rate:g}-{attempt}",
                seed=seed,
                scale=scale,
            )
            trial = judge(graded.report, rate)
            if said is not None:
                said(trial)
            if not trial.sustained:
                break
        return trial

    sustained, trials = await ladder(floor, stated, sustains, steps=steps)
    found = Calibration(
        challenge=challenge.id,
        host=coach.grader.scales.calibrations.host,
        cpus=host_cpus(),
        fingerprint=fingerprint(challenge, coach.grader.scales.calibrations.backend),
        reference=design.name,
        floor_rate=floor,
        stated_rate=stated,
        sustained_rate=sustained,
        measured_at=datetime.now(UTC).isoformat(timespec="seconds"),
        trials=trials,
    )
    coach.grader.scales.calibrations.put(found)
    return found
