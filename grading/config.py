"""What the grader needs to know about a challenge, independent of how the catalog stores it."""

from __future__ import annotations

from dataclasses import dataclass, field

from grading.report import LoadScale

RECOVERY_S = 5.0  # default limit for being back to good answers after a fault heals, seconds


@dataclass(frozen=True)
class GradeConfig:
    challenge: str
    parameters: dict[str, str] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)  # check id -> max points
    gates: tuple[str, ...] = ()  # check ids that must pass for the grade to pass
    pass_mark: int = 70
    thresholds: dict[str, str] = field(default_factory=dict)  # name -> "p99 < 10ms"
    scale: LoadScale = field(default_factory=LoadScale)  # the load's rate and why
    budgets_s: dict[str, float] = field(default_factory=dict)  # phase -> seconds
    recovery_s: float = RECOVERY_S  # ``faults.recovery``'s limit after each fault heals

    def param_int(self, name: str) -> int:
        return int(self.parameters[name])

    def param_float(self, name: str) -> float:
        return float(self.parameters[name])
