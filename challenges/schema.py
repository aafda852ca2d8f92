"""The schema of ``challenge.yaml``."""

from __future__ import annotations

import random
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from grading.config import RECOVERY_S
from grading.nemesis import FaultStep
from grading.thresholds import Threshold
from provisioning import FaultAction, Resource
from provisioning.faults import PROCESS_PREFIX
from provisioning.sandbox import Limits

Identifier = Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{1,48}$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Scale(Strict):
    """What the statement promises: the production scale the design is for."""

    rate: float = Field(gt=0, description="requests per second at peak")
    description: str
    p99_ms: float | None = Field(default=None, gt=0)


class FaultPlan(Strict):
    """One fault of the fault run: on a ``resource`` of the environment, or on a ``process`` of
    a hosted submission's manifest (``kill`` only: SIGKILL of the replica started last, started
    again ``heal_after_s`` later, as a process manager would)."""

    resource: Resource | None = None
    process: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9-]{0,31}$")
    action: str
    at_s: tuple[float, float] = Field(description="seeded time window after the load starts")
    heal_action: str | None = None
    heal_after_s: float | None = Field(default=None, gt=0)
    if_used: bool = Field(
        default=False,
        description="fire only when the design was seen using this resource before the "
        "fault run (its fingerprint): faults go where the design lives",
    )

    @model_validator(mode="after")
    def _one_target(self) -> FaultPlan:
        if (self.resource is None) == (self.process is None):
            raise ValueError("a fault names either a resource or a process, not both or neither")
        if self.process is not None:
            if self.action != FaultAction.KILL:
                raise ValueError(f"process {self.process}: the only action is kill")
            if self.heal_action not in (None, FaultAction.START):
                raise ValueError(f"process {self.process}: the only heal_action is start")
            if self.heal_after_s is None:
                raise ValueError(f"process {self.process}: give heal_after_s (then it starts)")
            if self.if_used:
                raise ValueError(f"process {self.process}: if_used is for resources")
        return self

    @property
    def target(self) -> str:
        """What the fault hits: the resource's name, or ``process:<name>``."""
        return (
            self.resource.value if self.resource is not None else PROCESS_PREFIX + str(self.process)
        )

    def step(self, rng: random.Random) -> FaultStep:
        """This fault at a seeded time within ``at_s``."""
        heal = self.heal_action or (FaultAction.START.value if self.process else None)
        return FaultStep(
            at_s=rng.uniform(*self.at_s),
            resource=self.target,
            action=self.action,
            heal_action=heal,
            heal_after_s=self.heal_after_s,
            if_used=self.if_used,
        )


class LoadPlanSpec(Strict):
    """What a grade actually runs on one machine (may be below the stated scale)."""

    rate: float = Field(
        gt=0,
        le=50_000,
        description="the load's requests/s on every worker, at least (the floor a worker "
        "falls back to when it has not measured more)",
    )
    stated_rate: float | None = Field(
        default=None,
        gt=0,
        le=50_000,
        description="the load's requests/s that carry the stated scale (default: scale.rate, "
        "when one load request is one unit of the statement); a worker that sustains it "
        "grades at it",
    )
    reference: str | None = Field(
        default=None,
        pattern=r"^[a-z][a-z0-9_]*$",
        description="the reference design (solutions/<name>) a worker measures the rate it "
        "sustains with: the one built for throughput (default: the lowest baseline p99)",
    )
    duration_s: float = Field(gt=0, le=60, description="steady load, judged on thresholds")
    fault_duration_s: float = Field(default=0, ge=0, le=60, description="load under faults")
    faults: tuple[FaultPlan, ...] = ()
    recovery_s: float = Field(
        default=RECOVERY_S,
        gt=0,
        le=60,
        description="faults.recovery: back to good answers within this many seconds of each "
        "fault healing",
    )

    @model_validator(mode="after")
    def _faults_fit(self) -> LoadPlanSpec:
        for f in self.faults:
            lo, hi = f.at_s
            if not 0 <= lo <= hi < self.fault_duration_s:
                raise ValueError(
                    f"fault {f.target} {f.action}: at_s {list(f.at_s)} must lie within "
                    f"[0, fault_duration_s={self.fault_duration_s})"
                )
        return self


class Scoring(Strict):
    pass_mark: int = Field(default=70, ge=0, le=100)
    gates: tuple[str, ...] = ()
    weights: dict[str, float]

    @model_validator(mode="after")
    def _gates_are_weighted(self) -> Scoring:
        missing = [g for g in self.gates if g not in self.weights]
        if missing:
            raise ValueError(f"gates not in weights: {', '.join(missing)}")
        if any(w < 0 for w in self.weights.values()):
            raise ValueError("weights must not be negative")
        return self


class HostedCaps(Strict):
    """The caps of a hosted submission's run box: the same for every learner of the challenge
    (``hosted:`` in challenge.yaml; every field optional)."""

    cpus: float = Field(default=1.5, gt=0, le=8, description="CPU share of the whole box")
    memory_mb: int = Field(default=512, ge=64, le=16384, description="whole box, MiB")
    pids: int = Field(default=256, ge=16, le=4096, description="tasks in the box")
    disk_mb: int = Field(default=512, ge=16, le=16384, description="writable area, MiB")
    run_s: float | None = Field(
        default=None,
        gt=0,
        le=86400,
        description="seconds the run box may live (the grade and any time kept after it); "
        "default: until the environment's TTL",
    )

    def limits(self) -> Limits:
        """The box's caps; ``wall_s`` is ``run_s`` (None: the run path caps it at the
        environment's TTL, ``provisioning.hosted.service.run_spec``)."""
        return Limits(
            cpus=self.cpus,
            memory_mb=self.memory_mb,
            pids=self.pids,
            disk_mb=self.disk_mb,
            wall_s=self.run_s,
        )


class ChallengeSpec(Strict):
    id: Identifier
    title: str = Field(min_length=3, max_length=120)
    difficulty: int = Field(ge=1, le=5)
    tags: tuple[str, ...] = ()
    summary: str = Field(min_length=10, max_length=300)
    rotation: int = Field(default=100, ge=0, description="order in the daily rotation")
    resources: tuple[Resource, ...] = Field(min_length=1)
    parameters: dict[str, str] = {}
    scale: Scale
    contract: str = Field(min_length=10, description="the HTTP contract, markdown")
    grading: LoadPlanSpec
    thresholds: dict[str, str] = {}
    scoring: Scoring
    hosted: HostedCaps = HostedCaps()

    @property
    def stated_load_rate(self) -> float:
        """The load's requests/s at the stated scale (``grading.stated_rate`` or ``scale.rate``)."""
        return self.grading.stated_rate or self.scale.rate

    @model_validator(mode="after")
    def _floor_below_stated(self) -> ChallengeSpec:
        if self.grading.rate > self.stated_load_rate:
            raise ValueError(
                f"grading.rate {self.grading.rate:g} is above the stated scale's load rate "
                f"{self.stated_load_rate:g}; set grading.stated_rate to the requests/s that "
                "carry the stated scale"
            )
        return self

    @field_validator("parameters", mode="before")
    @classmethod
    def _stringify(cls, value: object) -> object:
        if isinstance(value, dict):
            return {str(k): str(v) for k, v in value.items()}
        return value

    @field_validator("thresholds")
    @classmethod
    def _parse_thresholds(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            try:
                Threshold.parse(text)
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
        return value
