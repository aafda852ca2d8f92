"""What load rate this host sustains for a challenge, measured with a reference design.

A challenge states its scale (``scale.rate``; ``grading.stated_rate`` in the load's own
requests/s) and a floor every worker grades at (``grading.rate``). A worker that sustains the
stated rate should grade at it; one that does not grades at the highest rate it sustained,
and says so in the report (:mod:`bot.core.scale`). *Sustained* is judged by the grade itself:
a reference design — the one with the lowest p99 among the challenge's passing baselines — is
graded at the rate, on this host, with its stores and the grader's load generator beside it,
and every ``load.*`` check must pass (a threshold missed, or the load generator falling behind
its schedule, is not sustained; see :meth:`grading.scenario.Grade.judge`).

The ladder: the stated rate first; if it is not sustained, a geometric bisection between the
floor and the stated rate (``steps`` rates, each tried up to ``tries`` times: a neighbour's
burst is no limit). The result is kept per host and challenge in
``<data_dir>/calibration/<host>/<challenge>.json`` and holds while the challenge's files and
the host's CPU count are those it was measured with (:func:`fingerprint`).
"""

from __future__ import annotations

import asyncio
import fcntl
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


def fingerprint(challenge: Challenge) -> str:
    """What a measurement depends on: the challenge's statement of load and grader, and the
    CPUs here. A change to either makes the measurement stale."""
    digest = hashlib.sha256()
    for name in ("challenge.yaml", "scenario.py"):
        digest.update((challenge.path / name).read_bytes())
    digest.update(f"cpus={host_cpus()}".encode())
    return digest.hexdigest()[:16]


class CalibrationStore:
    """Measurements of this host, one JSON file per challenge, written atomically."""

    def __init__(self, data_dir: Path, host: str | None = None) -> None:
        self.host = host or socket.gethostname()  # the name this host gives itself, no lookup
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
        return found if found.fingerprint == fingerprint(challenge) else None

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
    """Sustained when every ``load.*`` check of the grade passed (none: not sustained)."""
    load = [c for c in report.checks if c.id.startswith("load.")]
    broken = next((c for c in load if c.status != Status.PASS), None)
    if load and broken is None:
        return Trial(rate, True)
    why = f"{broken.id} {broken.status.value}: {broken.detail}" if broken else "no load check ran"
    return Trial(rate, False, why)


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

    async def sustains(rate: float) -> Trial:
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
            if trial.sustained:
                break
        return trial

    sustained, trials = await ladder(floor, stated, sustains, steps=steps)
    found = Calibration(
        challenge=challenge.id,
        host=coach.grader.scales.calibrations.host,
        cpus=host_cpus(),
        fingerprint=fingerprint(challenge),
        reference=design.name,
        floor_rate=floor,
        stated_rate=stated,
        sustained_rate=sustained,
        measured_at=datetime.now(UTC).isoformat(timespec="seconds"),
        trials=trials,
    )
    coach.grader.scales.calibrations.put(found)
    return found
