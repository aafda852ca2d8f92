"""The API a challenge's ``scenario.py`` is written on.

A scenario subclasses :class:`Scenario` and implements the phases it needs; each phase
receives a :class:`Grade`, which owns the hard parts (HTTP against the pinned target,
open-model load with a nemesis, checks with actionable evidence, metrics).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any, ClassVar, Protocol

from grading import fingerprint, network
from grading.config import GradeConfig
from grading.http import Client, Exchange
from grading.load import LoadPlan, LoadResult, run_load
from grading.nemesis import FaultStep, FaultWindow, Nemesis
from grading.report import Check, Report, Status
from grading.thresholds import Threshold, Verdict, judge
from grading.timeline import Timeline
from grading.urlguard import Target
from provisioning import Environment, FaultRecord
from provisioning.faults import process_target

log = logging.getLogger(__name__)
SNAPSHOT_TIMEOUT_S = 10.0
MEASURED_SHARE = 0.5  # a latency threshold is judged only when this share was answered right

Injector = Callable[[str, str], Awaitable[FaultRecord]]
Progress = Callable[[str, float], None]
PHASES = ("contract", "load", "verification")
# What the runner itself records when a phase overruns its budget or crashes (0 points).
ENGINE_CHECKS = frozenset(f"{p}.{why}" for p in PHASES for why in ("budget", "crashed"))


class UndeclaredCheck(ValueError):
    """A scenario recorded a check id its ``checks`` does not declare."""


class Scenario:
    """Base class for a challenge's grader. Phases run in order; any may be left as is.

    ``checks`` declares, once, the ids of every check the scenario records: the catalog
    cross-checks them against ``challenge.yaml``'s ``scoring.weights`` and ``gates`` when the
    challenge loads (see ``challenges/checks.py``, which reads the literal without importing
    the scenario), and :meth:`Grade.check` refuses any other id. Empty means undeclared (no
    check is refused), for ad-hoc scenarios outside the catalog.
    """

    checks: ClassVar[tuple[str, ...]] = ()

    async def contract(self, g: Grade) -> None:
        """Check the HTTP contract, request by request."""

    async def load(self, g: Grade) -> None:
        """Load at the stated scale, with faults on the environment."""

    async def verify(self, g: Grade) -> None:
        """Compare what the service acknowledged with what it stored."""


class _Discussion(Protocol):
    def __call__(self, report: Report) -> str: ...


class Grade:
    """Everything a phase may use; the runner builds one per grade."""

    def __init__(
        self,
        *,
        config: GradeConfig,
        target: Target,
        http: Client,
        report: Report,
        env: Environment | None,
        injector: Injector | None,
        progress: Progress | None,
        checks: Sequence[str] = (),
        processes: frozenset[str] | None = None,
    ) -> None:
        self.config = config
        # the processes the injector can kill (a hosted submission's manifest); None: a URL
        self.processes = processes
        self.declared = frozenset(checks)  # the scenario's declared check ids (empty: any)
        self.target = target
        self.http = http
        self.report = report
        self.env = env
        self.seed = report.seed
        self.rng = random.Random(report.seed)  # the grade's data
        # the fault times, a stream of their own: they do not move with how much data was drawn
        self.fault_rng = random.Random(f"{report.seed}:faults")
        self.timeline: Timeline | None = None  # every load run of this grade, end to end
        self.fault_windows: list[FaultWindow] = []
        self.requests_sent = 0
        self.phase = ""
        self.usage_before: fingerprint.Snapshot | None = None  # the runner's first snapshot
        self.faults_not_fired: list[FaultStep] = []  # ``if_used`` faults the design escaped
        self.faults_impossible: list[tuple[FaultStep, str]] = []  # (fault, why it cannot fire)
        self.network_rtt_ms: float | None = None  # a remote target's round trip (the runner's)
        self.judged_on_service_share: list[str] = []  # threshold checks judged net of it
        self._injector = injector
        self._progress = progress

    # -- parameters -------------------------------------------------------------------
    def param(self, name: str) -> str:
        return self.config.parameters[name]

    def param_int(self, name: str) -> int:
        return self.config.param_int(name)

    def param_float(self, name: str) -> float:
        return self.config.param_float(name)

    def progress(self, fraction: float) -> None:
        if self._progress is not None:
            self._progress(self.phase, max(0.0, min(1.0, fraction)))

    # -- results ----------------------------------------------------------------------
    def metric(self, name: str, value: float | int | None) -> None:
        self.report.metrics[name] = value

    def check(
        self,
        check_id: str,
        title: str,
        ok: bool | Status,
        *,
        detail: str = "",
        exchange: Exchange | None = None,
        expected: Any = None,
        actual: Any = None,
        evidence: dict[str, Any] | None = None,
        partial: float | None = None,
    ) -> Check:
        """Record a check. ``partial`` (0..1) awards part of the points to a non-passing check.
        Raises :class:`UndeclaredCheck` for an id the scenario's ``checks`` does not declare.

        A check that does not pass always says why in one line: without a ``detail``, it is
        made of ``expected``/``actual`` and the exchange (``GET /x answered 500``), so no
        failure reaches a learner with the facts hidden in its evidence only. With an
        ``expected`` and an ``exchange`` but no ``actual``, the actual is what the exchange
        answered (status and the body's first 300 characters, or why there was no answer).
        """
        if actual is None and expected is not None and exchange is not None:
            actual = exchange.error or f"{exchange.status} {exchange.text(300)}"
        if self.declared and check_id not in self.declared and check_id not in ENGINE_CHECKS:
            raise UndeclaredCheck(
                f"check {check_id!r} is not among the scenario's declared checks; add it to "
                "its `checks` and give it a weight in challenge.yaml"
            )
        status = ok if isinstance(ok, Status) else (Status.PASS if ok else Status.FAIL)
        if status in (Status.FAIL, Status.ERROR, Status.WARN) and not detail:
            detail = _why(expected, actual, exchange) or title
        max_points = float(self.config.weights.get(check_id, 0))
        if status == Status.PASS:
            points = max_points
        elif status == Status.WARN:
            points = max_points * (0.5 if partial is None else partial)
        else:
            points = max_points * (partial or 0.0)
        ev: dict[str, Any] = dict(evidence or {})
        if exchange is not None:
            ev.update(exchange_evidence(exchange))
        if expected is not None:
            ev["expected"] = expected
        if actual is not None:
            ev["actual"] = actual
        check = Check(check_id, title, status, round(points, 2), max_points, detail, ev)
        self.report.checks = [c for c in self.report.checks if c.id != check_id] + [check]
        return check

    def judge(self, check_id: str, title: str, threshold: str, result: LoadResult) -> Verdict:
        """Record a k6-style threshold check over a load run.

        It passes when the threshold holds over the whole run and in every sliding window; a
        run that holds overall but breaks it in some window (a stall, a fault's effect) earns a
        warning with half the points; a run that breaks it overall fails — unless the load
        generator itself fell behind on a *latency or rate* threshold, which makes that figure
        unreliable: then it only warns. The generator's lag never excuses errors — a request
        that failed or timed out failed whoever was slow — so an ``errors`` threshold broken
        overall fails whatever the generator did.
        """
        asked = Threshold.parse(threshold)
        shifted = network.on_service_share(asked, self.network_rtt_ms)
        verdict = judge(shifted or asked, result)
        whole_ok = verdict.whole_value is None or verdict.threshold.passes(verdict.whole_value)
        excused = result.unreliable and verdict.threshold.metric != "errors"
        detail = verdict.description
        if result.unreliable:
            detail += f" (the load generator fell behind: {result.unreliable_reason})"
        good = result.ok / result.scheduled if result.scheduled else 0.0
        if verdict.threshold.metric not in ("errors", "rate") and good < MEASURED_SHARE:
            # The latency of wrong answers says nothing of the service's: no credit for it.
            detail = (
                f"only {good:.0%} of the requests were answered as the contract says; a "
                f"latency of errors does not count ({verdict.description})"
            )
            self.check(check_id, title, Status.FAIL, detail=detail)
            return verdict
        if shifted is not None:  # a remote target: the limit applies to the service's share
            detail = (
                f"judged on the service's share: {asked} for the service is {shifted} as "
                f"measured over a network round trip of {self.network_rtt_ms:.1f} ms; {detail}"
            )
            self.judged_on_service_share.append(check_id)
        if verdict.ok:
            status = Status.PASS
        elif whole_ok or excused:
            status = Status.WARN
        else:
            status = Status.FAIL
        self.check(
            check_id, title, status, detail=detail, evidence={"errors_by_kind": result.errors}
        )
        return verdict

    def load_metrics(self, result: LoadResult, latency: str = "load") -> None:
        """A steady run's figures: ``load.achieved_rate``, ``<latency>.p50_ms``/``p99_ms``
        (corrected for coordinated omission) and ``load.error_rate``."""
        self.metric("load.achieved_rate", round(result.achieved_rate, 1))
        self.metric(f"{latency}.p50_ms", round(result.percentile_ms(50), 2))
        self.metric(f"{latency}.p99_ms", round(result.percentile_ms(99), 2))
        self.metric("load.error_rate", round(result.error_rate, 4))

    def rejections(
        self, check_id: str, title: str, failures: Sequence[tuple[str, Exchange]], total: int
    ) -> Check:
        """A check that ``total`` invalid requests each got 400; ``failures`` are the
        (label, exchange) pairs that did not. Points shrink with the share that failed."""
        first = failures[0][1] if failures else None
        return self.check(
            check_id,
            title,
            not failures,
            detail=", ".join(f"{label}: {ex.status}" for label, ex in failures),
            exchange=first,
            expected="400" if first else None,
            actual=first.status if first else None,
            partial=1 - len(failures) / total,
        )

    def recovery(
        self, windows: Sequence[FaultWindow], limit_s: float | None = None, *, title: str = ""
    ) -> float | None:
        """``faults.recovery``: back to good answers within ``limit_s`` of every fault healing
        (default: the challenge's ``grading.recovery_s``, 5 s unless challenge.yaml says).

        Records ``faults.recovery_s`` (the worst; None when some fault never recovered).
        Without any fault window (none fired) the check is skipped: nothing to recover from.
        """
        if not windows:
            self.skip_faults("faults.recovery", detail=self._no_fault_reason())
            return None
        if limit_s is None:
            limit_s = self.config.recovery_s
        recoveries = [w.recovery_s for w in windows]
        worst = None if any(r is None for r in recoveries) else max(recoveries, default=0.0)
        self.metric("faults.recovery_s", None if worst is None else round(worst, 2))
        self.check(
            "faults.recovery",
            title or f"Recovers within {limit_s:g} s after each fault heals",
            worst is not None and worst <= limit_s,
            detail="; ".join(w.observed for w in windows),
            expected=f"recovery <= {limit_s:g} s",
            actual="never recovered during the run" if worst is None else f"{worst:.2f} s",
        )
        return worst

    def availability(
        self,
        title: str,
        result: LoadResult,
        detail: str,
        *,
        penalty: float = 10.0,
        windows: Sequence[FaultWindow] | None = None,
    ) -> None:
        """``faults.availability``: what failing requests during faults cost — a trade-off, so
        it warns rather than fails, its points shrinking ``penalty`` times the error rate.
        Given the run's ``windows`` and none fired, it is skipped like ``recovery``."""
        if windows is not None and not windows:
            self.skip_faults("faults.availability", detail=self._no_fault_reason())
            return
        self.check(
            "faults.availability",
            title,
            Status.PASS if result.error_rate == 0 else Status.WARN,
            partial=max(0.0, 1 - result.error_rate * penalty),
            detail=detail,
            evidence={"errors_by_kind": result.errors},
        )

    def skip_faults(self, *check_ids: str, detail: str = "") -> None:
        """Fault checks no fault could be judged for: skipped (they neither earn nor cost
        points), and said so — by default, a grade made without an environment."""
        for check_id in check_ids:
            self.check(
                check_id,
                "Behaviour under injected faults",
                Status.SKIP,
                detail=detail or "graded without an environment: no fault was injected",
            )

    def _no_fault_reason(self) -> str:
        if self.faults_impossible:
            return "no fault was injected: " + "; ".join(
                dict.fromkeys(why for _, why in self.faults_impossible)
            )
        if self.faults_not_fired:
            spared = sorted({f.resource for f in self.faults_not_fired})
            return (
                "no fault was injected: the design was not seen using "
                + ", ".join(spared)
                + ", so taking it away would prove nothing"
            )
        return "no fault was injected"

    # -- traffic ----------------------------------------------------------------------
    async def request(self, method: str, path: str, **kwargs: Any) -> Exchange:
        self.requests_sent += 1
        return await self.http.request(method, path, **kwargs)

    async def burst(self, calls: Sequence[tuple[str, str, dict[str, Any]]]) -> list[Exchange]:
        """Send every request at once (concurrently) and return the exchanges in order."""
        self.requests_sent += len(calls)
        return list(await asyncio.gather(*(self.http.request(m, p, **kw) for m, p, kw in calls)))

    @property
    def can_inject(self) -> bool:
        return self._injector is not None and self.env is not None

    async def fault(self, resource: str, action: str) -> FaultRecord:
        if self._injector is None:
            raise RuntimeError("this grade has no environment to inject faults into")
        return await self._injector(resource, action)

    async def resources_used(self) -> set[str] | None:
        """The resources the design has used since the grade began (its fingerprint so far),
        or None when that cannot be told (no environment, a snapshot failed)."""
        if self.env is None or self.usage_before is None:
            return None
        now = await self.usage_snapshot()
        if now is None:
            log.warning("usage snapshot failed; every fault fires")
            return None
        return set(fingerprint.diff(self.usage_before, now, self.requests_sent).resources_used)

    async def usage_snapshot(self) -> fingerprint.Snapshot | None:
        """The environment's usage counters now (every store's), or None without an
        environment or when they could not be read within ``SNAPSHOT_TIMEOUT_S`` (logged)."""
        if self.env is None:
            return None
        try:
            return await asyncio.wait_for(fingerprint.snapshot(self.env), SNAPSHOT_TIMEOUT_S)
        except Exception:
            log.warning("usage snapshot failed", exc_info=True)
            return None

    def process_fault_reason(self, target: str) -> str | None:
        """Why a fault on ``target`` cannot be injected in this grade, or ``None`` when it can
        (a resource; or ``process:<name>`` of a hosted submission that runs ``<name>``)."""
        name = process_target(target)
        if name is None:
            return None
        if self.processes is None:
            return (
                f"{name} is a process of hosted code, and this grade is of a URL: no process "
                "of the service runs here to be killed"
            )
        if name not in self.processes:
            return f"the submission's cruscible.toml runs no process named {name}"
        return None

    def _injectable(self, faults: Sequence[FaultStep]) -> list[FaultStep]:
        """``faults`` less those on a process this grade cannot reach (kept with the reason)."""
        kept = []
        for f in faults:
            why = self.process_fault_reason(f.resource)
            if why is None:
                kept.append(f)
            else:
                self.faults_impossible.append((f, why))
        return kept

    async def _where_the_design_lives(self, faults: Sequence[FaultStep]) -> list[FaultStep]:
        """``faults`` less the ``if_used`` ones on resources the design never touched."""
        if not any(f.if_used for f in faults):
            return list(faults)
        used = await self.resources_used()
        if used is None:
            return list(faults)
        kept = [f for f in faults if not f.if_used or f.resource in used]
        self.faults_not_fired += [f for f in faults if f not in kept]
        return kept

    async def run_load(
        self,
        plan: LoadPlan,
        *,
        faults: Sequence[FaultStep] = (),
    ) -> tuple[LoadResult, list[FaultWindow]]:
        """Run an open-model load; fire ``faults`` during it when an environment is attached.

        A fault marked ``if_used`` fires only on a resource the design was seen using (its
        fingerprint until now): a design is faulted where it lives, and not credited for
        surviving an outage of something it never touched. A fault on ``process:<name>`` fires
        only in a grade of hosted code running ``<name>`` (:meth:`process_fault_reason`); the
        others are kept in ``faults_impossible`` with the reason the fault checks give. Successive runs are laid end to
        end on ``self.timeline``; the report's fault times are on that same axis.
        """
        if faults and self.can_inject:
            faults = await self._where_the_design_lives(self._injectable(faults))
        nemesis = None
        if faults and self.can_inject:
            assert self._injector is not None
            nemesis = Nemesis(self._injector, list(faults), seed=self.seed)
        t0 = time.monotonic()
        stop = asyncio.Event()
        nemesis_task = asyncio.create_task(nemesis.run(t0, stop)) if nemesis else None
        try:
            result = await run_load(self.target, plan, on_tick=self.progress)
        finally:
            if nemesis_task is not None:
                stop.set()  # anything still pending heals now, even when the load was cancelled
                await asyncio.shield(nemesis_task)
        self.requests_sent += result.sent
        offset = self._append_timeline(result.timeline)
        windows: list[FaultWindow] = []
        if nemesis is not None:
            nemesis.shift(offset)
            assert self.timeline is not None
            windows = nemesis.outcomes(self.timeline)
        self.fault_windows.extend(windows)
        self.report.faults.extend(w.to_outcome() for w in windows)
        for w in windows:  # what each outage cost, for the discussion to name
            self.metric(f"faults.{w.resource}.errors_during", w.errors_during)
            p99 = None if w.p99_during_ms is None else round(w.p99_during_ms, 2)
            self.metric(f"faults.{w.resource}.p99_during_ms", p99)
        return result, windows

    @property
    def timeline_end_s(self) -> float:
        """Where the next load run starts on the grade's timeline (seconds): a run's own
        times (e.g. ``on_result``'s scheduled times) plus this are on the report's axis."""
        tl = self.timeline
        return tl.buckets[-1].t_s + tl.bucket_s if tl is not None and tl.buckets else 0.0

    def _append_timeline(self, part: Timeline) -> float:
        """Append ``part`` after what is there; return the offset it was shifted by."""
        offset = self.timeline_end_s
        if self.timeline is None:
            self.timeline = Timeline(part.bucket_s)
        self.timeline.buckets.extend(replace(b, t_s=round(b.t_s + offset, 6)) for b in part.buckets)
        return offset


def _why(expected: Any, actual: Any, exchange: Exchange | None) -> str:
    """One line: expected vs actual, and what the exchange answered."""
    parts = []
    if expected is not None or actual is not None:
        parts.append(f"expected {expected}, got {actual}")
    if exchange is not None:
        answer = exchange.error or f"answered {exchange.status}"
        parts.append(f"{exchange.method} {exchange.url} {answer}")
    return "; ".join(parts)


def exchange_evidence(ex: Exchange, body_limit: int = 600) -> dict[str, Any]:
    """The request/response pair of an exchange, as a learner would want to see it."""
    request = f"{ex.method} {ex.url}"
    if ex.request_body:
        request += "\n" + ex.request_body[:body_limit].decode("utf-8", "replace")
    response = f"(no response: {ex.error})" if ex.error else f"{ex.status}\n{ex.text(body_limit)}"
    return {"request": request, "response": response, "curl": ex.curl()}
