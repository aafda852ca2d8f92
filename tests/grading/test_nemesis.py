"""The nemesis: seeded schedules, firing on time, and what a timeline says about each fault.

The injector here is a test double for provisioning's fault injection: a real coroutine
that records each call and answers with requested/effective wall-clock times.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import pytest

from grading.nemesis import FaultStep, Fired, Nemesis
from grading.report import FaultOutcome
from grading.timeline import Bucket, Timeline


@dataclass(frozen=True)
class Record:
    requested_at: float
    effective_at: float


class Injector:
    """Records (resource, action, seconds since t0); restarts take ``restart_s`` to finish."""

    def __init__(self, restart_s: float = 0.2, fail: set[str] | None = None) -> None:
        self.t0 = time.monotonic()
        self.calls: list[tuple[str, str, float]] = []
        self.restart_s = restart_s
        self.fail = fail or set()

    async def __call__(self, resource: str, action: str) -> Record:
        self.calls.append((resource, action, time.monotonic() - self.t0))
        if action in self.fail:
            raise RuntimeError(f"{resource} is gone")
        requested = time.time()
        if action == "restart":
            await asyncio.sleep(self.restart_s)
        return Record(requested, time.time())


def test_seeded_schedule_is_deterministic() -> None:
    a = Nemesis.schedule(7, "redis", "pause", "restart", within=(5.0, 15.0))
    assert a == Nemesis.schedule(7, "redis", "pause", "restart", within=(5.0, 15.0))
    assert a != Nemesis.schedule(8, "redis", "pause", "restart", within=(5.0, 15.0))
    assert a != Nemesis.schedule(7, "postgres", "pause", "restart", within=(5.0, 15.0))
    pause, restart = a
    assert 5.0 <= pause.at_s < 10.0 <= restart.at_s < 15.0
    assert (pause.heal_action, pause.heal_after_s) == ("resume", 2.0)
    assert (restart.heal_action, restart.heal_after_s) == (None, None)
    kill = Nemesis.schedule(1, "nats", "kill", within=(1, 2), heal_after_s=0.5)[0]
    assert (kill.heal_action, kill.heal_after_s) == ("start", 0.5)
    with pytest.raises(ValueError):
        Nemesis.schedule(1, "nats", within=(1, 2))


async def test_steps_fire_and_heal_on_time() -> None:
    inject = Injector(restart_s=0.2)
    steps = [
        FaultStep(0.3, "postgres", "restart"),
        FaultStep(0.1, "redis", "pause", heal_action="resume", heal_after_s=0.3),
    ]
    nemesis = Nemesis(inject, steps, seed=3)
    t0 = inject.t0 = time.monotonic()
    fired = await nemesis.run(t0)
    assert [(r, a) for r, a, _ in inject.calls] == [
        ("redis", "pause"), ("postgres", "restart"), ("redis", "resume"),
    ]  # fmt: skip
    assert [t for *_, t in inject.calls] == pytest.approx([0.1, 0.3, 0.4], abs=0.05)
    pause, restart = fired
    assert pause.at_s == pytest.approx(0.1, abs=0.05) and pause.healed_at_s == pytest.approx(
        0.4, abs=0.05
    )
    assert restart.at_s == pytest.approx(0.3, abs=0.05)
    assert restart.effective_s == restart.healed_at_s == pytest.approx(0.5, abs=0.05)
    assert pause.error is None and restart.error is None


async def test_stop_skips_pending_steps_and_heals_at_once() -> None:
    inject = Injector()
    steps = [
        FaultStep(0.05, "redis", "pause", heal_action="resume", heal_after_s=30),
        FaultStep(30, "postgres", "kill", heal_action="start", heal_after_s=1),
    ]
    nemesis = Nemesis(inject, steps)
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.2, stop.set)
    started = time.monotonic()
    fired = await nemesis.run(inject.t0, stop)
    assert time.monotonic() - started < 1.0
    assert [(r, a) for r, a, _ in inject.calls] == [("redis", "pause"), ("redis", "resume")]
    assert fired[0].healed_at_s == pytest.approx(0.2, abs=0.05) and fired[1].at_s is None
    assert len(nemesis.outcomes(Timeline(0.25))) == 1  # a step that never fired has no window


async def test_failed_injection_is_reported() -> None:
    inject = Injector(fail={"kill"})
    nemesis = Nemesis(inject, [FaultStep(0.0, "nats", "kill", heal_action="start", heal_after_s=1)])
    await nemesis.run(time.monotonic())
    (window,) = nemesis.outcomes(Timeline(0.25))
    assert window.error == "kill failed: nats is gone" and window.traffic_during == 0
    assert window.observed == "nats kill at 0.0 s could not be injected: kill failed: nats is gone"


def timeline(spec: dict[float, tuple[int, int, float]], end: float = 10.0) -> Timeline:
    """Buckets of 0.5 s: ``{t_s: (requests, errors, p99_ms)}``; unlisted ones are healthy."""
    tl = Timeline(0.5)
    for k in range(int(end / 0.5)):
        t = k * 0.5
        n, errors, p99 = spec.get(t, (100, 0, 2.0))
        tl.buckets.append(
            Bucket(
                t_s=t,
                sent=n,
                ok=n - errors,
                errors={"http_5xx": errors} if errors else {},
                p50_ms=p99 / 2 if n else None,
                p99_ms=p99 if n else None,
                max_ms=p99 if n else None,
            )
        )
    return tl


def fired(step: FaultStep, at: float, healed: float | None) -> Nemesis:
    nemesis = Nemesis(Injector(), [step])
    nemesis.fired = [Fired(step, at_s=at, effective_s=at, healed_at_s=healed)]
    return nemesis


def test_outcome_of_a_fault_that_broke_requests() -> None:
    step = FaultStep(4.0, "redis", "pause", heal_action="resume", heal_after_s=2.0)
    tl = timeline({t: (100, 50, 900.0) for t in (4.0, 4.5, 5.0, 5.5, 6.0)})
    (w,) = fired(step, 4.0, 6.0).outcomes(tl)
    assert (w.traffic_during, w.errors_during, w.errors_by_kind) == (400, 200, {"http_5xx": 200})
    assert (w.p99_during_ms, w.baseline_p99_ms, w.recovery_s) == (900.0, 2.0, 0.5)
    assert w.observed == (
        "redis pause at 4.0 s for 2.0 s: 200 of 400 requests failed (http_5xx) until 6.5 s; "
        "recovered 0.5 s after healing"
    )
    assert w.to_outcome() == FaultOutcome("redis", "pause", 4.0, 6.0, w.observed)


def test_outcome_of_a_fault_seen_only_in_latency() -> None:
    step = FaultStep(3.0, "postgres", "restart")
    tl = timeline({3.0: (100, 0, 250.0), 3.5: (100, 0, 180.0), 4.0: (100, 0, 40.0)})
    (w,) = fired(step, 3.0, 3.8).outcomes(tl)
    assert w.errors_during == 0 and w.p99_during_ms == 250.0
    assert w.recovery_s == pytest.approx(0.7)  # the 4.0 s bucket is still 20× the baseline
    assert w.observed == (
        "postgres restart at 3.0 s: all 200 requests succeeded; p99 250.0 ms (baseline 2.0 ms); "
        "recovered 0.7 s after it was back"
    )


def test_outcome_without_traffic_or_recovery() -> None:
    quiet = FaultStep(2.0, "nats", "kill", heal_action="start", heal_after_s=1.0)
    tl = timeline({2.0: (0, 0, 0.0), 2.5: (0, 0, 0.0)})
    (w,) = fired(quiet, 2.0, 3.0).outcomes(tl)
    assert w.traffic_during == 0 and "live traffic never met it" in w.observed
    broken = timeline({t / 2: (100, 100, 2000.0) for t in range(10, 20)})
    (w,) = fired(FaultStep(5.0, "redis", "kill"), 5.0, None).outcomes(broken)
    assert w.recovery_s is None and w.healed_at_s is None and w.traffic_during == 1000
    assert w.observed.endswith("until 10.0 s; it was not healed during the run")


def test_recovery_from_the_result_stream() -> None:
    step = FaultStep(1.0, "redis", "restart")
    samples = [(0.5, True), (1.1, False), (1.6, False), (1.7, True), (1.75, False), (1.9, True)]
    (w,) = fired(step, 1.0, 1.5).outcomes(timeline({1.0: (100, 30, 5.0)}), samples)
    assert w.recovery_s == pytest.approx(0.4)  # first success after the last failure (1.75 s)
    assert "until 1.8 s" in w.observed
