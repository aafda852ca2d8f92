"""Thresholds in the spirit of k6 (``p99 < 10ms``, ``errors < 1%``, ``rate >= 1900/s``).

A threshold is judged over the whole run and over every sliding window of the load
timeline (windows of ``window_s`` seconds, stepping by one bucket), so a fault that
breaks the service for a few seconds shows even when the whole-run figure passes.
Latency percentiles of a window are computed exactly from the latencies of the requests
scheduled inside it (corrected for coordinated omission), never by averaging buckets.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # parsing a threshold (the catalog does) needs neither numpy nor the loader
    import numpy as np

    from grading.load import LoadResult

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_SYNTAX = re.compile(
    r"^\s*(?P<metric>[a-z_ ]+?|p\(?\s*[0-9.]+\s*\)?)\s*(?P<op><=|>=|<|>)\s*"
    r"(?P<num>[0-9][0-9,_]*(?:\.[0-9]+)?|\.[0-9]+)\s*(?P<unit>[a-zµ/%]+(?:/s)?)?\s*$"
)
_LATENCY_UNITS = {"us": 0.001, "µs": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, None: 1.0}
_RATE_UNITS = {"/s", "rps", "req/s", None}
_ALIASES = {
    "med": "p50",
    "median": "p50",
    "avg": "mean",
    "error": "errors",
    "error rate": "errors",
    "error_rate": "errors",
    "errors rate": "errors",
    "throughput": "rate",
    "rps": "rate",
}
_EXAMPLES = '"p99 < 10ms", "max < 2s", "errors < 1%", "rate >= 1900/s"'


@dataclass(frozen=True)
class Threshold:
    """``metric op limit``: latency limits in ms, error limits as a fraction, rates in req/s."""

    metric: str  # "p99", "p99.9", "mean", "min", "max", "errors", "rate"
    op: str
    limit: float
    text: str = ""

    @classmethod
    def parse(cls, text: str) -> Threshold:
        """Parse ``text``; ValueError says what is wrong and what would be right."""
        m = _SYNTAX.match(text.lower())
        if m is None:
            raise ValueError(f"cannot read threshold {text!r}; write it like {_EXAMPLES}")
        metric = re.sub(r"\s+", " ", m["metric"].strip())
        metric = _ALIASES.get(metric, metric)
        pct = re.fullmatch(r"p\(?\s*([0-9]+(?:\.[0-9]+)?)\s*\)?", metric)
        number, unit = float(m["num"].replace(",", "").replace("_", "")), m["unit"]
        if pct:
            q = float(pct[1])
            if not 0 < q <= 100:
                raise ValueError(f"percentile in {text!r} must be within (0, 100]")
            metric = f"p{q:g}"
        elif metric not in ("mean", "min", "max", "errors", "rate"):
            raise ValueError(
                f"unknown metric {m['metric'].strip()!r} in {text!r}; use pNN, med, avg, "
                "min, max, errors or rate"
            )
        if metric == "errors":
            if unit == "%":
                limit = number / 100
            elif unit is None and number <= 1:
                limit = number
            else:
                raise ValueError(f'an error limit is a percentage ("errors < 1%"), not {text!r}')
        elif metric == "rate":
            if unit not in _RATE_UNITS:
                raise ValueError(
                    f'a rate is in requests per second ("rate >= 100/s"), not {text!r}'
                )
            limit = number
        else:
            if unit not in _LATENCY_UNITS:
                raise ValueError(f'a latency limit is in us, ms or s ("p99 < 10ms"), not {text!r}')
            limit = number * _LATENCY_UNITS[unit]
        return cls(metric, m["op"], limit, text.strip())

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.format(self.limit)}"

    @property
    def is_latency(self) -> bool:
        return self.metric not in ("errors", "rate")

    def passes(self, value: float) -> bool:
        return _OPS[self.op](value, self.limit)

    def format(self, value: float) -> str:
        if self.metric == "errors":
            return f"{value:.2%}"
        if self.metric == "rate":
            return f"{value:,.0f}/s"
        return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.3g} ms"

    def worst(self, values: list[float]) -> int:
        """Index of the worst value (highest for an upper limit, lowest for a lower one)."""
        pick = max if self.op in ("<", "<=") else min
        return values.index(pick(values))


@dataclass
class Verdict:
    threshold: Threshold
    ok: bool
    whole_value: float | None
    worst_window_value: float | None
    worst_window_start_s: float | None
    first_breach_s: float | None
    description: str
    window_s: float = 5.0


def _latency_ms(metric: str, lat_us: np.ndarray) -> float | None:
    import numpy as np

    if lat_us.size == 0:
        return None
    if metric == "max":
        return float(lat_us.max()) / 1000
    if metric == "min":
        return float(lat_us.min()) / 1000
    if metric == "mean":
        return float(lat_us.mean(dtype=np.float64)) / 1000
    q = float(metric[1:])
    return float(np.percentile(lat_us, q, method="inverted_cdf")) / 1000


class _Measure:
    """The threshold's metric over any span of bucket indices of one result."""

    def __init__(self, threshold: Threshold, result: LoadResult) -> None:
        self.t = threshold
        self.result = result
        self.buckets = result.timeline.buckets
        self.bucket_s = result.timeline.bucket_s
        self.end_s = result.duration_s

    def span(self, lo: int, hi: int) -> float | None:
        """The metric over buckets ``lo`` (inclusive) to ``hi`` (exclusive)."""
        start = self.buckets[lo].t_s
        end = self.buckets[hi - 1].t_s + self.bucket_s
        if self.t.is_latency:
            return _latency_ms(self.t.metric, self.result.latencies_us(start, end))
        part = self.buckets[lo:hi]
        if self.t.metric == "errors":
            done = sum(b.completed for b in part)
            return sum(b.error_count for b in part) / done if done else None
        seconds = min(end, self.end_s) - start
        return sum(b.ok for b in part) / seconds if seconds > 0 else None

    def whole(self) -> float | None:
        r = self.result
        if self.t.is_latency:
            return _latency_ms(self.t.metric, r.latencies_us())
        if self.t.metric == "errors":
            return r.error_rate if r.scheduled else None
        return r.ok / r.duration_s if r.duration_s > 0 else None


def judge(threshold: Threshold, result: LoadResult, window_s: float = 5.0) -> Verdict:
    """Judge ``threshold`` over the whole run and over sliding ``window_s`` windows.

    ``first_breach_s`` is when the breach began: in the first window that breaches, the
    start of the first bucket that breaches on its own (or the window's start if only the
    window as a whole does).
    """
    measure = _Measure(threshold, result)
    n = len(measure.buckets)
    whole = measure.whole()
    width = min(n, max(1, round(window_s / measure.bucket_s)))
    windows = [(lo, measure.span(lo, lo + width)) for lo in range(n - width + 1)] if n else []
    seen = [(lo, v) for lo, v in windows if v is not None]
    worst_value = worst_start = first_breach = None
    if seen:
        lo, worst_value = seen[threshold.worst([v for _, v in seen])]
        worst_start = measure.buckets[lo].t_s
        breached = next((lo for lo, v in seen if not threshold.passes(v)), None)
        if breached is not None:
            first_breach = measure.buckets[breached].t_s
            for b in range(breached, breached + width):
                v = measure.span(b, b + 1)
                if v is not None and not threshold.passes(v):
                    first_breach = measure.buckets[b].t_s
                    break
    ok = (whole is None or threshold.passes(whole)) and first_breach is None
    text = f"{threshold.metric} = {'n/a' if whole is None else threshold.format(whole)}"
    text += f" (limit {threshold.op} {threshold.format(threshold.limit)})"
    if worst_value is not None and len(seen) > 1:
        span = width * measure.bucket_s
        text += (
            f"; worst {span:g} s window {threshold.format(worst_value)} "
            f"at {worst_start:.1f}–{worst_start + span:.1f} s"
        )
    if first_breach is not None:
        text += f"; first breach at {first_breach:.1f} s"
    return Verdict(
        threshold=threshold,
        ok=ok,
        whole_value=whole,
        worst_window_value=worst_value,
        worst_window_start_s=worst_start,
        first_breach_s=first_breach,
        description=text,
        window_s=window_s,
    )
