"""A load run over time, in fixed buckets: what plots, windowed thresholds and the nemesis read.

Times are seconds since the load phase started (the same origin as ``FaultOutcome.at_s``).
Latencies are milliseconds, corrected for coordinated omission (measured from the
scheduled send time).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Bucket:
    t_s: float
    sent: int = 0
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def completed(self) -> int:
        return self.ok + self.error_count


@dataclass
class Timeline:
    bucket_s: float
    buckets: list[Bucket] = field(default_factory=list)

    def between(self, start_s: float, end_s: float) -> list[Bucket]:
        return [b for b in self.buckets if start_s <= b.t_s < end_s]
