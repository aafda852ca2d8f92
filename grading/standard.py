"""The standard phases, run by the engine from ``challenge.yaml``: a scenario says only what is
specific to its challenge.

A :class:`StandardScenario` gives

- :meth:`~StandardScenario.traffic`: the requests of a load segment (``"steady"`` or
  ``"faults"``) as a :class:`~grading.load.LoadPlan` at ``self.spec.grading.rate``;
- :meth:`~StandardScenario.cases`: its contract cases (request by request, with their checks);
- :meth:`~StandardScenario.bad_inputs`: requests the contract refuses with 400, as data;
- optionally :meth:`~StandardScenario.alongside` (what runs while a segment's load runs) and
  :meth:`~grading.scenario.Scenario.verify` (the stored state against what was acknowledged).

With a ``provider`` among the challenge's resources, ``self.provider`` is the simulated API's
admin client (:class:`~grading.provider.ProviderAdmin`), its record of calls emptied before the
cases run; ``None`` when graded without an environment.

and the engine runs, with check ids the scenario still declares in ``checks``:

- contract: ``contract.healthz`` (``GET /healthz`` answers 200), the cases, then
  ``contract.bad-input`` (every bad input answered 400; points shrink with the share that was
  not);
- load: the steady segment for ``grading.duration_s``; its figures (``load.achieved_rate``,
  ``load.p50_ms``, ``load.p99_ms``, ``load.error_rate``, ``load.rate_target``); each of the
  YAML's ``thresholds`` judged as ``load.<name>``;
- faults: the segment for ``grading.fault_duration_s`` with the YAML's ``grading.faults`` fired
  at times drawn from the grade's fault stream (``Grade.fault_rng``, apart from the data's:
  fault times do not depend on how many values the traffic drew), then ``faults.recovery``
  (``grading.recovery_s``; only where the scenario declares it) and ``faults.availability``.
  Graded without an environment, both are skipped, with the reason: nothing was taken away.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from grading.http import Exchange
from grading.load import LoadPlan, LoadResult
from grading.nemesis import FaultStep, FaultWindow
from grading.provider import ProviderAdmin
from grading.report import Status
from grading.scenario import Grade, Scenario
from provisioning import Resource

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BadInput:
    """A request the contract refuses with 400; ``label`` names it in the report. The body is
    ``json`` (serialised) or ``body`` (raw bytes, e.g. not JSON at all). ``also_ok`` lists other
    statuses the contract allows for it (404 for a resource that may be gone before its body
    is read)."""

    label: str
    method: str
    path: str
    json: Any = None
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    also_ok: tuple[int, ...] = ()

    def kwargs(self) -> dict[str, Any]:
        """``grading.http.Client.request``'s keyword arguments for this request."""
        return {"json": self.json, "body": self.body, "headers": self.headers or None}


class StandardScenario(Scenario):
    """A scenario whose standard phases the engine runs from ``challenge.yaml`` (see the
    module). ``unit`` names a load request in titles (``"increments"``: "p99 < 20ms at 100
    increments/s"); ``latency_metric`` names the steady run's latency figures
    (``"ingest"``: ``ingest.p50_ms``, ``ingest.p99_ms``); ``availability_title`` titles
    ``faults.availability`` and ``availability_penalty`` is what its error rate costs."""

    unit: ClassVar[str] = "requests"
    latency_metric: ClassVar[str] = "load"
    availability_title: ClassVar[str] = "Keeps answering while a resource is down"
    availability_penalty: ClassVar[float] = 10.0

    def __init__(self, spec: Any) -> None:
        self.spec = spec  # challenges.schema.ChallengeSpec
        self.provider: ProviderAdmin | None = None

    # -- what the author writes ---------------------------------------------------------
    def traffic(self, g: Grade, segment: str, duration_s: float) -> LoadPlan:
        """The requests of load ``segment`` (``"steady"``, ``"faults"``) for ``duration_s``."""
        raise NotImplementedError(f"{type(self).__name__} must define traffic()")

    async def cases(self, g: Grade) -> None:
        """The contract's own cases, after ``contract.healthz``."""

    def bad_inputs(self, g: Grade) -> Sequence[BadInput]:
        """Requests the contract refuses with 400 (none: no ``contract.bad-input`` check)."""
        return ()

    async def alongside(self, g: Grade, segment: str, duration_s: float) -> None:
        """What runs while the load of ``segment`` runs (probes, a consumer); awaited after.
        It starts once :meth:`traffic` made the segment's plan, so it may use what that drew."""

    # -- what the engine runs -----------------------------------------------------------
    async def contract(self, g: Grade) -> None:
        if g.env is not None and Resource.PROVIDER in g.env.resources:
            self.provider = ProviderAdmin.of(g.env.admin(Resource.PROVIDER))
            await self.provider.reset()  # this grade's record of calls starts empty
        ex = await g.request("GET", "/healthz")
        g.check("contract.healthz", "GET /healthz answers 200", ex.status == 200, exchange=ex)
        g.progress(0.1)
        await self.cases(g)
        g.progress(0.8)
        cases = list(self.bad_inputs(g))
        if cases:
            failures: list[tuple[str, Exchange]] = []
            for case in cases:
                ex = await g.request(case.method, case.path, **case.kwargs())
                if ex.status != 400 and ex.status not in case.also_ok:
                    failures.append((case.label, ex))
            g.rejections("contract.bad-input", "Invalid requests get 400", failures, len(cases))
        g.progress(1.0)

    async def load(self, g: Grade) -> None:
        grading = self.spec.grading
        result, _ = await self.segment(g, "steady", grading.duration_s)
        g.metric("load.rate_target", grading.rate)
        g.load_metrics(result, latency=self.latency_metric)
        for name, threshold in self.spec.thresholds.items():
            title = f"{threshold} at {grading.rate:g} {self.unit}/s"
            g.judge(f"load.{name}", title, threshold, result)
        if not grading.faults:
            return
        if not g.can_inject:
            g.skip_faults(*self.fault_checks())
            return
        g.phase = "faults"
        steps = [f.step(g.fault_rng) for f in grading.faults]
        result, windows = await self.segment(g, "faults", grading.fault_duration_s, steps)
        self.faulted(g, result, windows)

    def faulted(self, g: Grade, result: LoadResult, windows: list[FaultWindow]) -> None:
        """The fault run's checks: ``faults.recovery`` and ``faults.availability``."""
        g.metric("faults.error_rate", round(result.error_rate, 4))
        if "faults.recovery" in self.fault_checks():
            g.recovery(windows)
        g.availability(
            self.availability_title,
            result,
            f"{result.error_rate:.1%} of the {self.unit} failed during the fault run",
            penalty=self.availability_penalty,
            windows=windows,
        )

    def fault_checks(self) -> tuple[str, ...]:
        """The fault run's check ids: ``faults.availability``, and ``faults.recovery`` unless
        the scenario declares checks without it (a challenge may judge availability alone)."""
        if self.checks and "faults.recovery" not in self.checks:
            return ("faults.availability",)
        return ("faults.recovery", "faults.availability")

    async def segment(
        self, g: Grade, segment: str, duration_s: float, faults: Sequence[FaultStep] = ()
    ) -> tuple[LoadResult, list[FaultWindow]]:
        """One load segment: the traffic, with :meth:`alongside` running beside it."""
        plan = self.traffic(g, segment, duration_s)
        side = asyncio.create_task(self.alongside(g, segment, duration_s))
        try:
            ran = await g.run_load(plan, faults=faults)
        except BaseException:  # the phase's budget ran out, the load crashed: stop it too
            side.cancel()
            await asyncio.gather(side, return_exceptions=True)
            raise
        (failed,) = await asyncio.gather(side, return_exceptions=True)
        if isinstance(failed, Exception):  # the run stands and is judged; the grade says so
            log.warning("what runs beside the %s load failed", segment, exc_info=failed)
            g.check(
                "load.crashed",
                "load phase ran to completion",
                Status.ERROR,
                detail=f"what runs beside the {segment} load failed: {failed!r}",
            )
        return ran
