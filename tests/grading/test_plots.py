"""Plots: valid, non-trivial PNGs, fast, for full, empty and gappy timelines."""

import math
import random

from grading.plots import grade_plot, latency_plot
from grading.report import FaultOutcome
from grading.timeline import Bucket, Timeline

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _timeline(seconds: int = 60) -> Timeline:
    rng = random.Random(7)
    buckets = []
    for s in range(seconds):
        down = 12 <= s < 15
        errors = {"connection": rng.randint(100, 300), "5xx": rng.randint(0, 50)} if down else {}
        if s in (30, 31):
            errors = {"timeout": 20}
        p50 = 1.5 + rng.random() * (40 if down else 0.5)
        buckets.append(
            Bucket(
                t_s=float(s),
                sent=2000,
                ok=2000 - sum(errors.values()),
                errors=errors,
                p50_ms=p50,
                p99_ms=p50 * (30 if down else 3),
                max_ms=p50 * (80 if down else 8),
            )
        )
    return Timeline(bucket_s=1.0, buckets=buckets)


FAULTS = [
    FaultOutcome("redis", "restart", 12.0, 14.1, "errors for 2.1 s"),
    FaultOutcome("postgres", "pause", 40.0, None, "never healed"),
]


def _is_png(path, min_bytes=10_000):
    data = path.read_bytes()
    return data[:8] == PNG_MAGIC and len(data) > min_bytes


def test_grade_plot_writes_a_readable_png(tmp_path):
    path = grade_plot(_timeline(), FAULTS, tmp_path / "latency.png", "rate-limiter", 10.0)
    assert path == tmp_path / "latency.png" and _is_png(path, 30_000)
    again = grade_plot(_timeline(), FAULTS, tmp_path / "again.png", "rate-limiter", 10.0)
    assert again.read_bytes()[:8] == PNG_MAGIC


def test_latency_plot(tmp_path):
    path = latency_plot(_timeline(), FAULTS, tmp_path / "sub" / "lat.png", "p99", threshold_ms=10)
    assert _is_png(path)


def test_empty_timeline_and_no_faults(tmp_path):
    empty = Timeline(bucket_s=1.0)
    assert _is_png(grade_plot(empty, [], tmp_path / "a.png", "empty"), 5_000)
    assert _is_png(latency_plot(empty, [], tmp_path / "b.png", "empty", 5.0), 5_000)


def test_missing_percentiles_and_zero_latency(tmp_path):
    tl = _timeline(20)
    for b in tl.buckets[5:10]:
        b.p50_ms = b.p99_ms = b.max_ms = None
    tl.buckets[0].p50_ms = 0.0
    tl.buckets[1].max_ms = math.nan
    only_none = Timeline(bucket_s=0.5, buckets=[Bucket(t_s=0.0, sent=3), Bucket(t_s=0.5)])
    assert _is_png(grade_plot(tl, FAULTS[:1], tmp_path / "gaps.png", "gaps"))
    assert _is_png(grade_plot(only_none, FAULTS, tmp_path / "none.png", "none", 1.0), 5_000)


def test_timeline_with_a_gap_in_buckets(tmp_path):
    tl = _timeline(30)
    del tl.buckets[10:14]
    assert _is_png(grade_plot(tl, FAULTS, tmp_path / "gap.png", "gap"))
