"""The grade report (JSON ``schema: 1``, a public contract — see DESIGN.md)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1


class Status(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    WARN = "warn"
    SKIP = "skip"
    ERROR = "error"


@dataclass
class Check:
    id: str
    title: str
    status: Status
    points: float
    max_points: float
    detail: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass
class FaultOutcome:
    resource: str
    action: str
    at_s: float
    healed_at_s: float | None
    observed: str


@dataclass
class Architecture:
    resources_used: list[str] = field(default_factory=list)
    signals: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoadScale:
    """The rate this grade's load ran at, next to the stated scale's, and why (``basis``).

    ``rate`` and ``stated_rate`` are the load's requests/s. ``basis``: ``stated`` (the worker
    grades at the stated scale), ``measured`` (the highest rate up to the stated one this
    worker sustained with a reference design), ``unmeasured`` (the worker has not measured:
    the challenge's floor), ``floor`` (the floor by policy: the operator's, a contest's,
    reference designs'), ``trial`` (a measurement). ``note`` says it in a sentence when the
    rate is below the stated one.
    """

    rate: float | None = None
    stated_rate: float | None = None
    basis: str = ""
    note: str = ""


@dataclass
class Report:
    challenge: str
    target: str
    environment: str | None
    seed: int
    score: int = 0
    passed: bool = False
    duration_s: float = 0.0
    checks: list[Check] = field(default_factory=list)
    metrics: dict[str, float | int | None] = field(default_factory=dict)
    faults: list[FaultOutcome] = field(default_factory=list)
    architecture: Architecture = field(default_factory=Architecture)
    scale: LoadScale = field(default_factory=LoadScale)
    discussion: str = ""
    artifacts: list[str] = field(default_factory=list)
    schema: int = SCHEMA_VERSION

    def check(self, check_id: str) -> Check:
        for c in self.checks:
            if c.id == check_id:
                return c
        raise KeyError(check_id)

    def first_failure(self) -> Check | None:
        return next((c for c in self.checks if c.status in (Status.FAIL, Status.ERROR)), None)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        ordered = {"schema": data.pop("schema")}
        ordered.update(data)
        return ordered

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)

    def write_json(self, path: Path) -> Path:
        path.write_text(self.to_json() + "\n")
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        if data.get("schema") != SCHEMA_VERSION:
            raise ValueError(f"unsupported report schema {data.get('schema')!r}")
        return cls(
            challenge=data["challenge"],
            target=data["target"],
            environment=data.get("environment"),
            seed=int(data["seed"]),
            score=int(data["score"]),
            passed=bool(data["passed"]),
            duration_s=float(data["duration_s"]),
            checks=[Check(**{**c, "status": Status(c["status"])}) for c in data["checks"]],
            metrics=dict(data["metrics"]),
            faults=[FaultOutcome(**f) for f in data["faults"]],
            architecture=Architecture(**data["architecture"]),
            scale=LoadScale(**data.get("scale", {})),
            discussion=data.get("discussion", ""),
            artifacts=list(data.get("artifacts", [])),
        )
