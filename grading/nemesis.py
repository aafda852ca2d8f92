"""The nemesis: faults fired into an environment on a seeded schedule, during a load run.

Each :class:`FaultStep` fires at a time relative to the load's start, and may be healed
some seconds after it took effect. The nemesis records when each fault and heal took
effect (seconds since the load started), and afterwards reads the load timeline to show
whether live traffic met the fault, what it saw, and how long the service took to
recover once the fault was healed.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from grading.report import FaultOutcome
from grading.timeline import Bucket, Timeline

INJECT_TIMEOUT_S = 30.0
BASELINE_S = 5.0
RECOVERY_FACTOR = 3.0  # latency is back when p99 <= max(factor × baseline, baseline + floor)
RECOVERY_FLOOR_MS = 5.0
HEALS = {"pause": "resume", "kill": "start"}
SELF_HEALING = {"restart", "restart-lose-data"}


class FaultRecordLike(Protocol):
    """What an injector returns (:class:`provisioning.faults.FaultRecord` fits)."""

    @property
    def requested_at(self) -> float: ...

    @property
    def effective_at(self) -> float: ...


Injector = Callable[[str, str], Awaitable[FaultRecordLike]]


@dataclass(frozen=True)
class FaultStep:
    at_s: float
    resource: str
    action: str
    heal_action: str | None = None
    heal_after_s: float | None = None
    if_used: bool = False  # fire only if the design was seen using ``resource``


@dataclass
class Fired:
    """What happened to one step (times in seconds since the load started)."""

    step: FaultStep
    at_s: float | None = None  # the fault was requested
    effective_s: float | None = None  # ... and had taken effect
    healed_at_s: float | None = None  # the heal (or a self-healing action) had taken effect
    error: str | None = None


@dataclass
class FaultWindow:
    resource: str
    action: str
    at_s: float
    healed_at_s: float | None
    traffic_during: int
    errors_during: int
    p99_during_ms: float | None
    baseline_p99_ms: float | None
    recovery_s: float | None
    observed: str
    errors_by_kind: dict[str, int] = field(default_factory=dict)
    error: str | None = None  # the injection itself failed

    def to_outcome(self) -> FaultOutcome:
        return FaultOutcome(
            resource=self.resource,
            action=self.action,
            at_s=round(self.at_s, 2),
            healed_at_s=None if self.healed_at_s is None else round(self.healed_at_s, 2),
            observed=self.observed,
        )


class Nemesis:
    """Fires ``steps`` through ``injector``; ``seed`` is the one the schedule came from."""

    def __init__(self, injector: Injector, steps: Sequence[FaultStep], seed: int = 0) -> None:
        self.injector = injector
        self.steps = sorted(steps, key=lambda s: s.at_s)
        self.seed = seed
        self.fired: list[Fired] = []

    @staticmethod
    def schedule(
        seed: int,
        resource: str,
        *actions: str,
        within: tuple[float, float],
        heal_after_s: float = 2.0,
    ) -> list[FaultStep]:
        """One step per action, each at a seeded time in its own slice of ``within``.

        Pause and kill are healed (resume, start) ``heal_after_s`` after taking effect;
        restarts heal themselves. The same arguments always give the same schedule.
        """
        lo, hi = within
        if not actions or hi < lo:
            raise ValueError("give at least one action and a window (lo, hi) with lo <= hi")
        rng = random.Random(f"{seed}:{resource}:{','.join(actions)}")
        width = (hi - lo) / len(actions)
        steps = []
        for k, action in enumerate(actions):
            heal = HEALS.get(action)
            steps.append(
                FaultStep(
                    at_s=round(lo + width * (k + rng.random()), 3),
                    resource=resource,
                    action=action,
                    heal_action=heal,
                    heal_after_s=heal_after_s if heal else None,
                )
            )
        return steps

    async def run(self, t0_monotonic: float, stop: asyncio.Event | None = None) -> list[Fired]:
        """Fire every step at ``t0 + at_s``; a set ``stop`` skips what has not fired and heals now."""
        stop = stop or asyncio.Event()
        self.fired = [Fired(step) for step in self.steps]
        await asyncio.gather(*(self._run_step(f, t0_monotonic, stop) for f in self.fired))
        return self.fired

    async def _run_step(self, fired: Fired, t0: float, stop: asyncio.Event) -> None:
        step = fired.step
        if await _stopped_before(stop, t0 + step.at_s):
            return
        effective = await self._inject(fired, step.action, t0)
        if effective is None:
            return
        fired.at_s, fired.effective_s = effective
        if step.heal_action is not None:
            await _stopped_before(stop, t0 + fired.effective_s + (step.heal_after_s or 0.0))
            healed = await self._inject(fired, step.heal_action, t0)
            fired.healed_at_s = None if healed is None else healed[1]
        elif step.action in SELF_HEALING:
            fired.healed_at_s = fired.effective_s

    async def _inject(self, fired: Fired, action: str, t0: float) -> tuple[float, float] | None:
        """Call the injector; (requested, effective) in seconds since t0, or None on failure."""
        requested = time.monotonic() - t0
        try:
            async with asyncio.timeout(INJECT_TIMEOUT_S):
                record = await self.injector(fired.step.resource, action)
        except Exception as exc:
            fired.error = f"{action} failed: {exc or type(exc).__name__}"
            return None
        return requested, requested + max(0.0, record.effective_at - record.requested_at)

    def shift(self, offset_s: float) -> None:
        """Move every recorded time by ``offset_s`` (the load ran later on a longer timeline)."""
        for f in self.fired:
            f.at_s = None if f.at_s is None else f.at_s + offset_s
            f.effective_s = None if f.effective_s is None else f.effective_s + offset_s
            f.healed_at_s = None if f.healed_at_s is None else f.healed_at_s + offset_s

    def outcomes(
        self, timeline: Timeline, samples: Sequence[tuple[float, bool]] | None = None
    ) -> list[FaultWindow]:
        """What live traffic saw of each fault; ``samples`` are (done_s, ok) per request."""
        return [_window(f, timeline, samples) for f in self.fired if f.at_s is not None or f.error]


async def _stopped_before(stop: asyncio.Event, deadline: float) -> bool:
    """Sleep until ``deadline`` (monotonic); True if ``stop`` was set first."""
    delay = deadline - time.monotonic()
    if delay > 0 and not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
    return stop.is_set()


def _overlapping(timeline: Timeline, start: float, end: float) -> list[Bucket]:
    end = max(end, start + 1e-9)
    return [b for b in timeline.buckets if b.t_s < end and b.t_s + timeline.bucket_s > start]


def _window(
    fired: Fired, timeline: Timeline, samples: Sequence[tuple[float, bool]] | None
) -> FaultWindow:
    step = fired.step
    name = f"{step.resource} {step.action}"
    if fired.at_s is None:
        return FaultWindow(
            step.resource, step.action, step.at_s, None, 0, 0, None, None, None,
            f"{name} at {step.at_s:.1f} s could not be injected: {fired.error}", error=fired.error,
        )  # fmt: skip
    at, healed = fired.at_s, fired.healed_at_s
    run_end = timeline.buckets[-1].t_s + timeline.bucket_s if timeline.buckets else at
    during = _overlapping(timeline, at, run_end if healed is None else healed)
    kinds: Counter[str] = Counter()
    for b in during:
        kinds.update(b.errors)
    traffic = sum(b.completed for b in during)
    errors = sum(kinds.values())
    p99s = [b.p99_ms for b in during if b.p99_ms is not None]
    before = [b for b in timeline.between(at - BASELINE_S, at) if b.t_s + timeline.bucket_s <= at]
    base_p99s = [b.p99_ms for b in before if b.p99_ms is not None]
    baseline = statistics.median(base_p99s) if base_p99s else None
    p99_during = max(p99s) if p99s else None
    if samples is not None:
        recovery, until = _recovery_from_samples(samples, at, healed)
    else:
        recovery, until = _recovery_from_buckets(timeline, at, healed, baseline)
    observed = _sentence(name, at, healed, traffic, errors, kinds, until, p99_during, baseline,
                         recovery, self_healing=step.heal_action is None)  # fmt: skip
    return FaultWindow(
        step.resource, step.action, at, healed, traffic, errors, p99_during, baseline,
        recovery, observed, dict(kinds), fired.error,
    )  # fmt: skip


def _recovery_from_buckets(
    timeline: Timeline, at: float, healed: float | None, baseline: float | None
) -> tuple[float | None, float | None]:
    """(seconds from heal to the first healthy bucket, end of the last failing bucket)."""
    width = timeline.bucket_s
    limit = (
        None if baseline is None else max(baseline * RECOVERY_FACTOR, baseline + RECOVERY_FLOOR_MS)
    )
    until = None
    for b in timeline.buckets:
        if b.t_s + width <= at:
            continue
        healthy = b.completed > 0 and b.error_count == 0
        healthy = healthy and (limit is None or b.p99_ms is None or b.p99_ms <= limit)
        if healed is not None and b.t_s + width > healed and healthy:
            return max(0.0, b.t_s - healed), until
        if b.error_count:
            until = b.t_s + width
    return None, until


def _recovery_from_samples(
    samples: Sequence[tuple[float, bool]], at: float, healed: float | None
) -> tuple[float | None, float | None]:
    """(seconds from heal to the first success after the last failure, last failure time)."""
    failures = [t for t, ok in samples if not ok and t >= at]
    until = max(failures) if failures else None
    if healed is None:
        return None, until
    after = max(healed, until or healed)
    first_ok = min((t for t, ok in samples if ok and t >= after), default=None)
    return (None if first_ok is None else max(0.0, first_ok - healed)), until


def _sentence(
    name: str,
    at: float,
    healed: float | None,
    traffic: int,
    errors: int,
    kinds: Counter[str],
    until: float | None,
    p99_during: float | None,
    baseline: float | None,
    recovery: float | None,
    *,
    self_healing: bool,
) -> str:
    head = f"{name} at {at:.1f} s"
    if healed is not None and not self_healing:
        head += f" for {healed - at:.1f} s"
    if traffic == 0:
        return f"{head}: no request was scheduled while it lasted, so live traffic never met it"
    if errors:
        what = ", ".join(f"{k}" for k, _ in kinds.most_common())
        body = f"{errors:,} of {traffic:,} requests failed ({what})"
        if until is not None:
            body += f" until {until:.1f} s"
    else:
        body = f"all {traffic:,} requests succeeded"
        if p99_during is not None:
            body += f"; p99 {p99_during:.1f} ms"
            if baseline is not None:
                body += f" (baseline {baseline:.1f} ms)"
    if healed is None:
        tail = "it was not healed during the run"
    elif recovery is None:
        tail = "the service had not recovered by the end of the run"
    else:
        tail = f"recovered {recovery:.1f} s after {'it was back' if self_healing else 'healing'}"
    return f"{head}: {body}; {tail}"
