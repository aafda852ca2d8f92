"""What a load run measured (:class:`LoadResult`) and how it is built from the run's flat
per-request arrays: HDR histograms, the timeline, and whether the generator kept up."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from hdrh.histogram import HdrHistogram

from grading.timeline import Bucket, Timeline

if TYPE_CHECKING:
    from grading.load.run import Run

HIST_MAX_US = 3_600_000_000
LAG_LIMIT_MS = 5.0
SEND_RATE_FLOOR = 0.97


@dataclass
class LoadResult:
    """What a load run measured. Times are seconds since the load started."""

    target_rate: float
    duration_s: float
    scheduled: int
    sent: int
    completed: int  # answered with an HTTP status (any status)
    ok: int
    errors: dict[str, int]
    statuses: dict[int, int]
    corrected: HdrHistogram
    raw: HdrHistogram
    timeline: Timeline
    achieved_rate: float
    max_lag_ms: float
    lag_p99_ms: float
    unreliable: bool
    unreliable_reason: str | None
    _due_s: np.ndarray = field(repr=False, compare=False, default_factory=lambda: np.zeros(0))
    _corrected_us: np.ndarray = field(
        repr=False, compare=False, default_factory=lambda: np.zeros(0, np.float32)
    )

    def percentile_ms(self, q: float, corrected: bool = True) -> float:
        """The ``q``-th percentile latency (0..100) in milliseconds; 0 when nothing finished."""
        hist = self.corrected if corrected else self.raw
        return hist.get_value_at_percentile(q) / 1000.0

    @property
    def error_rate(self) -> float:
        return sum(self.errors.values()) / self.scheduled if self.scheduled else 0.0

    def latencies_us(self, start_s: float = 0.0, end_s: float = math.inf) -> np.ndarray:
        """Corrected latencies (µs) of the requests scheduled in ``[start_s, end_s)``."""
        lo, hi = np.searchsorted(self._due_s, [start_s, end_s], side="left")
        return self._corrected_us[lo:hi]

    def to_dict(self) -> dict[str, Any]:
        def pcts(corrected: bool) -> dict[str, float]:
            hist = self.corrected if corrected else self.raw
            out = {
                f"p{q:g}": round(self.percentile_ms(q, corrected), 3) for q in (50, 90, 99, 99.9)
            }
            out["max"] = round(hist.get_max_value() / 1000.0, 3)
            return out

        return {
            "target_rate": round(self.target_rate, 2),
            "achieved_rate": round(self.achieved_rate, 2),
            "duration_s": round(self.duration_s, 3),
            "scheduled": self.scheduled,
            "sent": self.sent,
            "completed": self.completed,
            "ok": self.ok,
            "error_rate": round(self.error_rate, 6),
            "errors": dict(self.errors),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "latency_ms": {"corrected": pcts(True), "raw": pcts(False)},
            "lag_ms": {"p99": round(self.lag_p99_ms, 3), "max": round(self.max_lag_ms, 3)},
            "unreliable": self.unreliable,
            "unreliable_reason": self.unreliable_reason,
        }


def _histogram(values_us: np.ndarray) -> HdrHistogram:
    hist = HdrHistogram(1, HIST_MAX_US, 3)
    if values_us.size:
        clipped = np.clip(np.rint(values_us), 1, HIST_MAX_US).astype(np.int64)
        uniq, counts = np.unique(clipped, return_counts=True)
        for v, c in zip(uniq.tolist(), counts.tolist(), strict=True):
            hist.record_value(v, c)
    return hist


def _timeline(
    bucket_s: float,
    duration_s: float,
    due: np.ndarray,
    corrected_ms: np.ndarray,
    sent: np.ndarray,
    kind: np.ndarray,
    kinds: list[str],
) -> Timeline:
    n_buckets = max(1, math.ceil(duration_s / bucket_s - 1e-9))
    edges = np.searchsorted(due, np.arange(n_buckets + 1) * bucket_s, side="left")
    edges[-1] = due.size
    timeline = Timeline(bucket_s)
    for b in range(n_buckets):
        lo, hi = int(edges[b]), int(edges[b + 1])
        bucket = Bucket(t_s=round(b * bucket_s, 6), sent=int(sent[lo:hi].sum()))
        if hi > lo:
            counts = np.bincount(kind[lo:hi], minlength=len(kinds) + 1)
            bucket.ok = int(counts[0])
            bucket.errors = {kinds[c - 1]: int(counts[c]) for c in np.flatnonzero(counts[1:]) + 1}
            lat = corrected_ms[lo:hi]
            p50, p99 = np.percentile(lat, [50, 99], method="inverted_cdf")
            bucket.p50_ms, bucket.p99_ms = round(float(p50), 3), round(float(p99), 3)
            bucket.max_ms = round(float(lat.max()), 3)
        timeline.buckets.append(bucket)
    return timeline


def build_result(run: Run, scheduled: int, elapsed_s: float) -> LoadResult:
    """The result of ``run`` once it ended, ``scheduled`` requests in ``elapsed_s`` seconds."""
    plan = run.plan
    duration = (
        min(plan.duration_s, max(elapsed_s, 1e-9)) if scheduled < plan.total else plan.duration_s
    )
    due = plan.due_array(scheduled)
    corrected = np.frombuffer(run.corrected, np.float32)[:scheduled]
    raw = np.frombuffer(run.raw, np.float32)[:scheduled]
    kind = np.frombuffer(run.kind, np.uint16)[:scheduled].astype(np.int64)
    status = np.frombuffer(run.status, np.uint16)[:scheduled]
    lag = np.frombuffer(run.lag, np.float32)[:scheduled]
    counts = np.bincount(kind, minlength=len(run.kinds) + 1)
    errors = {run.kinds[c - 1]: int(counts[c]) for c in np.flatnonzero(counts[1:]) + 1}
    uniq, st_counts = np.unique(status[status > 0], return_counts=True)
    statuses = dict(zip(uniq.tolist(), st_counts.tolist(), strict=True))
    completed = int(np.count_nonzero(status))
    lag_ms = lag[lag >= 0] / 1000.0
    lag_p99 = float(np.percentile(lag_ms, 99)) if lag_ms.size else 0.0
    max_lag = float(lag_ms.max()) if lag_ms.size else 0.0
    target_rate = scheduled / duration
    reasons = []
    if lag_p99 > LAG_LIMIT_MS:
        reasons.append(
            f"the generator dispatched late: lag p99 {lag_p99:.1f} ms, max {max_lag:.1f} ms "
            f"(limit {LAG_LIMIT_MS:g} ms)"
        )
    expected = scheduled - run.held_back
    if expected > 0 and run.issued_on_time < SEND_RATE_FLOOR * expected:
        share = run.issued_on_time / expected
        reasons.append(
            f"the generator issued {run.issued_on_time / duration:,.0f} req/s of the "
            f"{expected / duration:,.0f} req/s due ({share:.1%}, {1 - share:.1%} short)"
        )
    return LoadResult(
        target_rate=target_rate,
        duration_s=duration,
        scheduled=scheduled,
        sent=run.sent,
        completed=completed,
        ok=int(counts[0]),
        errors=errors,
        statuses=statuses,
        corrected=_histogram(corrected),
        raw=_histogram(raw[raw >= 0]),
        timeline=_timeline(
            plan.bucket_s, duration, due, corrected / 1000.0, raw >= 0, kind, run.kinds
        ),
        achieved_rate=completed / duration,
        max_lag_ms=max_lag,
        lag_p99_ms=lag_p99,
        unreliable=bool(reasons),
        unreliable_reason="; ".join(reasons) or None,
        _due_s=due,
        _corrected_us=corrected,
    )
