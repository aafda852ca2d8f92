"""Grades a notification service: the contract, ingest under load while the provider
misbehaves, faults on the environment, then every accepted event against the provider's
own record of calls (lost, duplicated, how late).

Resends come as a client's retries do, at gaps from half a second to tens of seconds: within a
run, from the steady run during the fault run, and after the load. An event the service refused
during the load (not a 202, or no answer in time) is sent again after it, as the contract's
client would; one never accepted counts as lost."""

from __future__ import annotations

import asyncio
import bisect
import json
import math
import time
import uuid
from typing import Any, NamedTuple

from challenges.schema import ChallengeSpec
from grading import JSON_HEADERS, percentile, poll_until
from grading.checkers import duplicates
from grading.http import Exchange
from grading.load import LoadPlan, LoadResult, Request, Response
from grading.nemesis import FaultWindow
from grading.provider import Call, Window
from grading.report import Status
from grading.scenario import Grade
from grading.standard import BadInput, StandardScenario

TYPES = ("order_placed", "order_shipped", "order_delivered")
USERS = 500
RESEND_SHARE = 0.1  # of load requests resend an event_id sent earlier (a client's retry)
RESEND_GAP_S = (0.5, 30.0)  # how much earlier: log-uniform, across the runs
LATE_RESENDS = 60  # events of the load sent once more after it (late client retries)
RETRIES = 3  # times an event refused during the load is sent again after it
RETRY_PAUSE_S = 1.0  # between those rounds
RETRY_LIMIT_S = 10.0  # no round starts a batch later than this (the verification has 30 s)
RETRY_BATCH = 64  # requests sent at once in a round
RETRY_TIMEOUT_S = 2.0  # each retry's, as the load's requests
LAG_LIMIT_S = 5.0
DELIVERY_WAIT_S = 10.0  # contract: how long the first event may take to arrive
DELIVERY_POLL_S = 0.2
DRAIN_LIMIT_S = 10.0  # after the load: how long accepted events may take to arrive
SETTLE_S = 1.0  # then how long to keep watching for late duplicates
POLL_S = 0.5
EXAMPLES = 5

# The provider's script, in seconds from each run's start (rate: share of calls affected).
STEADY_WINDOWS = (
    Window(1.0, 3.0, "throttle", rate=0.3, retry_after_s=1),
    Window(3.0, 5.0, "error", rate=0.3, status=503),
    Window(5.0, 7.0, "slow", rate=0.3, delay_ms=800),
)
FAULT_WINDOWS = (Window(2.5, 5.5, "outage"),)


class Sent(NamedTuple):
    event_id: str
    body: bytes


def event_body(event_id: str, kind: str, user: str, order: int) -> bytes:
    return json.dumps(
        {"event_id": event_id, "type": kind, "user_id": user, "data": {"order_id": order}}
    ).encode()


def describe_calls(calls: list[Call]) -> str:
    if not calls:
        return "the provider never saw a call for it"
    parts = [f"{c.status or 'dropped'}" + (f" ({c.mode})" if c.mode else "") for c in calls]
    return f"the provider saw {len(calls)} call(s): " + ", ".join(parts)


class NotificationScenario(StandardScenario):
    checks = (
        "contract.healthz",
        "contract.accept",
        "contract.bad-input",
        "contract.resend",
        "contract.delivery",
        "contract.idempotent",
        "load.latency",
        "load.errors",
        "faults.availability",
        "delivery.no-loss",
        "delivery.no-duplicates",
        "delivery.lag",
    )
    unit = "events"
    latency_metric = "ingest"
    availability_title = (
        "Keeps accepting events while the provider is down and the environment is faulted"
    )

    def __init__(self, spec: ChallengeSpec) -> None:
        super().__init__(spec)
        self.t0 = time.time()
        self.sent: set[str] = set()  # every valid event_id the grader sent
        self.accepted: dict[str, float] = {}  # event_id -> epoch seconds of its first 2xx
        self.resent: list[str] = []  # contract-phase events sent more than once
        self.planned: list[tuple[float, Sent]] = []  # fresh load events by time on the timeline
        self.refused: dict[str, Sent] = {}  # load events not answered 202 at least once
        self.never_accepted: list[str] = []  # refused, and still not accepted after RETRIES
        self.gaps: list[float] = []  # seconds between an event's planned send and its resend
        self.rounds = 0  # times the refused events were sent again after the load
        self.outage_s = (0.0, 0.0)  # the provider's outage on the grade's timeline

    # -- helpers ----------------------------------------------------------------------
    def new_event(self, g: Grade) -> Sent:
        event_id = str(uuid.uuid4())  # fresh on every run; never affects the verdict
        self.sent.add(event_id)
        body = event_body(
            event_id, g.rng.choice(TYPES), f"user-{g.rng.randrange(USERS)}", g.rng.randrange(10**6)
        )
        return Sent(event_id, body)

    async def post(self, g: Grade, event: Sent) -> Exchange:
        ex = await g.request(
            "POST", "/v1/events", body=event.body, headers={"Content-Type": "application/json"}
        )
        if ex.status is not None and 200 <= ex.status < 300:
            self.accepted.setdefault(event.event_id, time.time())
        return ex

    def since_start(self, epoch: float) -> str:
        return f"{epoch - self.t0:.1f} s"

    # -- contract ---------------------------------------------------------------------
    async def cases(self, g: Grade) -> None:
        first = self.new_event(g)
        ex = await self.post(g, first)
        g.check(
            "contract.accept",
            "A valid event is accepted with 202",
            ex.status == 202,
            exchange=ex,
            expected=202,
            actual=f"{ex.status} {ex.text(200)}",
        )
        g.progress(0.2)

        again = await self.post(g, first)
        twin = self.new_event(g)
        burst = await g.burst(
            [
                (
                    "POST",
                    "/v1/events",
                    {"body": twin.body, "headers": {"Content-Type": "application/json"}},
                )
                for _ in range(4)
            ]
        )
        for b in burst:
            if b.status is not None and 200 <= b.status < 300:
                self.accepted.setdefault(twin.event_id, time.time())
        self.resent = [first.event_id, twin.event_id]
        bad = next((e for e in [again, *burst] if not (e.status and 200 <= e.status < 300)), None)
        g.check(
            "contract.resend",
            "Resending an event_id is answered 2xx (sequentially and concurrently)",
            bad is None,
            detail="one resend again, then 4 concurrent sends of a fresh event",
            exchange=bad,
            expected="202" if bad else None,
            actual=f"{bad.status} {bad.text(200)}" if bad else None,
        )
        g.progress(0.5)
        await self.first_delivery(g, first)

    def bad_inputs(self, g: Grade) -> list[BadInput]:
        good = {"event_id": str(uuid.uuid4()), "type": "order_placed", "user_id": "u1", "data": {}}

        def event(label: str, **kw: Any) -> BadInput:
            return BadInput(label, "POST", "/v1/events", **kw)

        def without(name: str) -> dict[str, Any]:
            return {k: v for k, v in good.items() if k != name}

        return [
            event("body not JSON", body=b"event_id=1", headers={"Content-Type": "text/plain"}),
            event("missing event_id", json=without("event_id")),
            event("event_id not a string", json={**good, "event_id": 42}),
            event("unknown type", json={**good, "type": "order_cancelled"}),
            event("missing user_id", json=without("user_id")),
            event("data not an object", json={**good, "data": [1, 2]}),
        ]

    async def first_delivery(self, g: Grade, event: Sent) -> None:
        """The first accepted event reaches the provider, well-formed, with the token."""
        title = f"The first event reaches the provider within {DELIVERY_WAIT_S:g} s, well-formed"
        if self.provider is None:
            g.check("contract.delivery", title, Status.SKIP, detail="graded without a provider")
            return
        if event.event_id not in self.accepted:
            g.check("contract.delivery", title, False, detail="the event was not accepted")
            return
        calls, _ = await poll_until(
            self.provider.calls,
            lambda calls: any(c.key == event.event_id and c.delivered for c in calls),
            limit_s=DELIVERY_WAIT_S,
            every_s=DELIVERY_POLL_S,
        )
        mine = [c for c in calls if c.key == event.event_id]
        delivered = next((c for c in mine if c.delivered), None)
        sent = json.loads(event.body)
        want = {
            "idempotency_key": event.event_id,
            "event_id": event.event_id,
            "user_id": sent["user_id"],
            "channel": "email",
        }
        if delivered is None:
            refused = sum(1 for c in calls if c.status == 401)
            detail = describe_calls(mine)
            if refused:
                detail += f"; {refused} call(s) were refused 401: check PROVIDER_TOKEN"
            g.check("contract.delivery", title, False, detail=detail, expected=want)
            return
        wrong = {k: delivered.body.get(k) for k, v in want.items() if delivered.body.get(k) != v}
        message = delivered.body.get("message")
        if not isinstance(message, str) or not message.strip():
            wrong["message"] = message
        g.check(
            "contract.delivery",
            title,
            not wrong,
            detail=(
                f"delivered {delivered.at - self.accepted[event.event_id]:.2f} s after the 202"
                + (f"; wrong fields: {', '.join(wrong)}" if wrong else "")
            ),
            expected={**want, "message": "a non-empty string"},
            actual=delivered.body,
        )

    # -- load and faults --------------------------------------------------------------
    def traffic(self, g: Grade, segment: str, duration_s: float) -> LoadPlan:
        """Fresh events at the graded rate; a share resends an event sent 0.5 to 30 s earlier
        on the grade's timeline (log-uniform: this run's or the steady run's), as a client's
        retries come."""
        rate = self.spec.grading.rate
        start = g.timeline_end_s
        events: list[Sent] = []
        for i in range(math.ceil(rate * duration_s)):
            at = start + i / rate
            if self.planned and g.rng.random() < RESEND_SHARE:
                events.append(self.earlier(g, at))
            else:
                events.append(self.new_event(g))
                self.planned.append((at, events[-1]))
        headers = JSON_HEADERS
        requests = [Request("POST", "/v1/events", e.body, headers, tag=e.event_id) for e in events]
        by_id = {e.event_id: e for e in events}

        def classify(_req: Request, resp: Response) -> str | None:
            return None if resp.status == 202 else f"http_{resp.status}"  # the contract's answer

        def on_result(
            _i: int, req: Request, resp: Response | None, kind: str | None, *_: float
        ) -> None:
            if resp is not None and kind is None:
                self.accepted.setdefault(req.tag, time.time())
            else:  # refused or unanswered: the contract's client sends it again
                self.refused.setdefault(req.tag, by_id[req.tag])

        return LoadPlan(
            rate=rate,
            duration_s=duration_s,
            make_request=requests.__getitem__,
            classify=classify,
            on_result=on_result,
        )

    def earlier(self, g: Grade, at: float) -> Sent:
        """An event planned a log-uniform gap in :data:`RESEND_GAP_S` before ``at`` (the first
        one when the grade is younger than the gap)."""
        lo, hi = (math.log(gap) for gap in RESEND_GAP_S)
        gap = math.exp(g.rng.uniform(lo, hi))
        index = bisect.bisect_right(self.planned, at - gap, key=lambda p: p[0]) - 1
        first_at, event = self.planned[max(0, index)]
        self.gaps.append(at - first_at)
        return event

    async def alongside(self, g: Grade, segment: str, duration_s: float) -> None:
        """The provider's script while a run's load runs: it throttles, fails and slows down
        in the steady run and goes dark in the fault run; it answers normally again after."""
        windows, seed = STEADY_WINDOWS, g.seed
        if segment == "faults":
            windows, seed = FAULT_WINDOWS, g.seed + 1
            outage, start = FAULT_WINDOWS[0], g.timeline_end_s
            self.outage_s = (start + outage.start_s, start + outage.end_s)
            g.metric("provider.outage_from_s", round(self.outage_s[0], 1))
            g.metric("provider.outage_to_s", round(self.outage_s[1], 1))
        if self.provider is None:
            return
        await self.provider.script(windows, seed)
        try:
            await asyncio.sleep(duration_s)
        finally:
            await self.provider.script((), g.seed)

    def faulted(self, g: Grade, result: LoadResult, windows: list[FaultWindow]) -> None:
        """``faults.availability`` alone, judged even when no fault fired in the environment:
        the provider's outage takes something away in every fault run."""
        g.metric("faults.error_rate", round(result.error_rate, 4))
        g.metric("faults.errors", sum(w.errors_during for w in windows))
        injected = (
            "; ".join(w.observed for w in windows) or "no fault injected into the environment"
        )
        g.availability(
            self.availability_title,
            result,
            f"{result.error_rate:.1%} of events were refused or timed out during the run "
            f"(provider outage from {self.outage_s[0]:.1f} s to {self.outage_s[1]:.1f} s); "
            f"{injected}",
        )

    # -- verification -----------------------------------------------------------------
    async def send_all(self, g: Grade, events: list[Sent], end: float) -> None:
        """Send ``events`` (at most :data:`RETRY_BATCH` at once, no batch after ``end`` on the
        monotonic clock); note the ones accepted."""
        options = {"headers": dict(JSON_HEADERS), "timeout_s": RETRY_TIMEOUT_S}
        for k in range(0, len(events), RETRY_BATCH):
            if time.monotonic() >= end:
                return
            batch = events[k : k + RETRY_BATCH]
            calls = [("POST", "/v1/events", {"body": e.body, **options}) for e in batch]
            for event, ex in zip(batch, await g.burst(calls), strict=True):
                if ex.status == 202:
                    self.accepted.setdefault(event.event_id, time.time())

    async def retry_refused(self, g: Grade) -> None:
        """After the load, as the contract's client would: send every event refused during it
        again, up to :data:`RETRIES` times, batches starting within :data:`RETRY_LIMIT_S`, with
        :data:`LATE_RESENDS` events of the load resent tens of seconds after their first send.
        What is still not accepted is recorded in ``never_accepted``."""
        late = g.rng.sample(self.planned, min(LATE_RESENDS, len(self.planned)))
        self.gaps += [g.timeline_end_s - at for at, _ in late]
        g.metric("ingest.resends", len(self.gaps))
        median = percentile(self.gaps, 50)
        g.metric("ingest.resend_gap_p50_s", None if median is None else round(median, 1))
        g.metric("ingest.resend_gap_max_s", round(max(self.gaps), 1) if self.gaps else None)
        pending = [e for e in self.refused.values() if e.event_id not in self.accepted]
        g.metric("ingest.refused", len(pending))
        end = time.monotonic() + RETRY_LIMIT_S
        await self.send_all(g, pending + [e for _, e in late], end)
        self.rounds = 1
        for _ in range(RETRIES - 1):
            pending = [e for e in pending if e.event_id not in self.accepted]
            if not pending or time.monotonic() + RETRY_PAUSE_S >= end:
                break
            await asyncio.sleep(RETRY_PAUSE_S)
            await self.send_all(g, pending, end)
            self.rounds += 1
        self.never_accepted = [e.event_id for e in pending if e.event_id not in self.accepted]
        g.metric("ingest.never_accepted", len(self.never_accepted))

    async def drain(self, g: Grade) -> list[Call]:
        """Wait (bounded) until every accepted event was delivered; then watch a little longer."""
        provider = self.provider
        assert provider is not None

        def all_delivered(calls: list[Call]) -> bool:
            missing = len(self.accepted.keys() - {c.key for c in calls if c.delivered})
            g.progress(1 - missing / max(1, len(self.accepted)))
            return not missing

        await poll_until(provider.calls, all_delivered, limit_s=DRAIN_LIMIT_S, every_s=POLL_S)
        await asyncio.sleep(SETTLE_S)
        return await provider.calls()

    async def verify(self, g: Grade) -> None:
        ids = ("delivery.no-loss", "delivery.no-duplicates", "delivery.lag", "contract.idempotent")
        if self.provider is None:
            for check_id in ids:
                g.check(
                    check_id,
                    "Deliveries at the provider",
                    Status.SKIP,
                    detail="graded without an environment: the provider's record is not available",
                )
            return
        await self.retry_refused(g)
        started = time.monotonic()
        calls = await self.drain(g)
        g.metric("delivery.drain_s", round(time.monotonic() - started - SETTLE_S, 1))
        ours = sorted((c for c in calls if c.key in self.sent), key=lambda c: c.at)
        by_key: dict[str, list[Call]] = {}
        for c in ours:
            by_key.setdefault(str(c.key), []).append(c)
        first_ok = {
            k: next(c.at for c in cs if c.delivered)
            for k, cs in by_key.items()
            if any(c.delivered for c in cs)
        }
        self.check_loss(g, by_key, first_ok)
        self.check_duplicates(g, ours)
        self.check_lag(g, first_ok)
        g.metric("provider.calls", len(ours))
        g.metric("provider.replayed", sum(1 for c in ours if c.replayed))  # resends let through
        g.metric(
            "provider.calls_per_event", round(len(ours) / len(first_ok), 2) if first_ok else None
        )

    def check_loss(
        self, g: Grade, by_key: dict[str, list[Call]], first_ok: dict[str, float]
    ) -> None:
        lost = sorted(
            (k for k in self.accepted if k not in first_ok), key=lambda k: self.accepted[k]
        )
        refused = self.never_accepted
        g.metric("delivery.accepted", len(self.accepted))
        g.metric("delivery.lost", len(lost) + len(refused))
        examples = [
            f"{k} accepted at {self.since_start(self.accepted[k])}: "
            f"{describe_calls(by_key.get(k, []))}"
            for k in lost[:EXAMPLES]
        ] + [f"{k} refused {self.rounds + 1} times" for k in refused[:EXAMPLES]]
        parts = []
        if lost:
            parts.append(
                f"{len(lost)} of {len(self.accepted)} accepted events never reached the provider "
                f"(waited {DRAIN_LIMIT_S:g} s after the load)"
            )
        if refused:
            parts.append(
                f"{len(refused)} events never accepted after {self.rounds} retries "
                f"(up to {RETRY_LIMIT_S:g} s after the load; "
                "to the client such an event is lost all the same)"
            )
        g.check(
            "delivery.no-loss",
            "Every event is accepted (retries included) and every accepted one delivered",
            not parts,
            detail="; ".join(parts) or f"all {len(self.accepted)} accepted events were delivered",
            expected="a 200 at the provider for every event answered 202; "
            f"every event answered 202 within {RETRIES} retries",
            actual=f"{len(lost)} missing, {len(refused)} never accepted" if parts else None,
            evidence={"lost": examples} if parts else None,
        )

    def check_duplicates(self, g: Grade, ours: list[Call]) -> None:
        found = duplicates([str(c.key) for c in ours if c.delivered])
        extra = int(found.counts.get("extra", 0))
        g.metric("delivery.duplicates", extra)
        worst = sorted(found.counts.get("duplicated", {}).items(), key=lambda kv: -kv[1])
        g.check(
            "delivery.no-duplicates",
            "No event is notified twice",
            extra == 0,
            detail=found.reason,
            expected="one 200 per idempotency_key",
            actual=f"{extra} extra notifications" if extra else None,
            evidence={"duplicated": [f"{k}: {n} times" for k, n in worst[:EXAMPLES]]}
            if extra
            else None,
        )
        twice = [k for k in self.resent if sum(1 for c in ours if c.key == k and c.delivered) != 1]
        g.check(
            "contract.idempotent",
            "Events resent in the contract phase were notified exactly once",
            not twice,
            detail=", ".join(
                f"{k}: {sum(1 for c in ours if c.key == k and c.delivered)} notifications"
                for k in twice
            ),
        )

    def check_lag(self, g: Grade, first_ok: dict[str, float]) -> None:
        lags = [max(0.0, first_ok[k] - at) for k, at in self.accepted.items() if k in first_ok]
        p50, p95 = percentile(lags, 50), percentile(lags, 95)
        g.metric("delivery.lag_p50_s", None if p50 is None else round(p50, 2))
        g.metric("delivery.lag_p95_s", None if p95 is None else round(p95, 2))
        g.metric("delivery.lag_max_s", round(max(lags), 2) if lags else None)
        g.check(
            "delivery.lag",
            f"Delivery lag p95 <= {LAG_LIMIT_S:g} s (from the 202 to the provider's 200)",
            p95 is not None and p95 <= LAG_LIMIT_S,
            detail="nothing was delivered"
            if p95 is None
            else f"p50 {p50:.2f} s, p95 {p95:.2f} s, max {max(lags):.2f} s over {len(lags)} events",
            expected=f"p95 <= {LAG_LIMIT_S:g} s",
            actual=None if p95 is None else f"{p95:.2f} s",
        )
