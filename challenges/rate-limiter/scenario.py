"""Grades a rate limiter: the contract, atomicity under concurrency, load, a Redis restart."""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import time
from collections import defaultdict
from typing import Any

from challenges.schema import ChallengeSpec
from grading import JSON_HEADERS, json_object
from grading.checkers import burst_over_admission, over_admission, starvation
from grading.history import History
from grading.http import Exchange
from grading.load import LoadPlan, LoadResult, Request, Response
from grading.nemesis import FaultWindow
from grading.report import Status
from grading.scenario import Grade
from grading.standard import BadInput, StandardScenario

BURST_KEYS = 25
LOAD_KEYS = 10_000
STEADY_PROBE_INTERVAL_S = 0.1  # a steady client: catches windows aligned to the clock
EDGE_LEAD_S = 0.6  # an edge client spends its budget this long before its window ends…
EDGE_FOLLOW_S = 1.5  # …and keeps asking this long after
READMIT_TOLERANCE_S = (
    1.0  # a refused client that keeps asking is admitted again within a window + this
)


def check_request(key: str, cost: int | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = {"key": key}
    if cost is not None:
        payload["cost"] = cost
    return {"json": payload}


class RateLimiterScenario(StandardScenario):
    checks = (
        "contract.healthz",
        "contract.allow-first",
        "contract.remaining",
        "contract.deny-over-limit",
        "contract.retry-after",
        "contract.keys-independent",
        "contract.cost",
        "contract.bad-input",
        "accuracy.atomic",
        "accuracy.readmitted",
        "load.latency",
        "load.errors",
        "faults.recovery",
        "faults.availability",
    )

    unit = "checks"

    def __init__(self, spec: ChallengeSpec) -> None:
        super().__init__(spec)
        self.nonce = secrets.token_hex(3)  # fresh keys on every run; never affects the verdict
        self.probes = History()
        # how each check of the fault run was answered: (scheduled s, done s, status; 0: none)
        self.fault_answers: list[tuple[float, float, int]] = []
        self.fault_offset_s = 0.0  # where the fault run starts on the grade's timeline

    def key(self, kind: str, i: int | str) -> str:
        return f"{kind}-{self.nonce}-{i}"

    async def check(self, g: Grade, key: str, cost: int | None = None) -> Exchange:
        return await g.request("POST", "/v1/check", **check_request(key, cost))

    # -- contract -------------------------------------------------------------------------
    async def cases(self, g: Grade) -> None:
        limit = g.param_int("RATE_LIMIT")
        window_ms = g.param_float("RATE_WINDOW_SECONDS") * 1000

        key = self.key("first", 0)
        ex = await self.check(g, key)
        data = json_object(ex)
        expected = {"allowed": True, "remaining": limit - 1}
        ok = (
            ex.status == 200
            and data is not None
            and all(data.get(k) == v for k, v in expected.items())
        )
        g.check(
            "contract.allow-first",
            "A fresh key is allowed, with remaining = RATE_LIMIT - 1",
            ok,
            exchange=ex,
            expected=f"200 {json.dumps(expected)}",
            actual=f"{ex.status} {ex.text(200)}",
        )
        g.progress(0.2)

        seen, bad = [], None
        for want in range(limit - 2, -1, -1):
            ex = await self.check(g, key)
            data = json_object(ex)
            got = data.get("remaining") if data else None
            seen.append(got)
            if ex.status != 200 or got != want:
                bad = (ex, want)
                break
        g.check(
            "contract.remaining",
            "remaining counts down to 0 within the window",
            bad is None,
            detail="" if bad is None else f"after {len(seen)} further requests",
            exchange=bad[0] if bad else None,
            expected=f"200 with remaining {bad[1]}" if bad else None,
            actual=f"{bad[0].status} {bad[0].text(200)}" if bad else None,
        )
        g.progress(0.35)

        ex = await self.check(g, key)
        data = json_object(ex)
        ok = ex.status == 429 and data is not None and data.get("allowed") is False
        g.check(
            "contract.deny-over-limit",
            "Request RATE_LIMIT + 1 is refused with 429",
            ok,
            exchange=ex,
            expected='429 {"allowed": false, "retry_after_ms": n}',
            actual=f"{ex.status} {ex.text(200)}",
        )
        retry = data.get("retry_after_ms") if data else None
        ok = (
            isinstance(retry, int | float)
            and not isinstance(retry, bool)
            and 0 < retry <= window_ms + 1000
        )
        g.check(
            "contract.retry-after",
            "retry_after_ms is a positive wait within one window",
            ok,
            exchange=ex,
            expected=f"0 < retry_after_ms <= {window_ms:.0f}",
            actual=retry,
        )
        g.progress(0.45)

        ex = await self.check(g, self.key("other", 0))
        data = json_object(ex)
        g.check(
            "contract.keys-independent",
            "Another key keeps its own budget",
            ex.status == 200 and bool(data and data.get("allowed") is True),
            exchange=ex,
            expected="200 allowed",
            actual=f"{ex.status} {ex.text(200)}",
        )

        ex = await self.check(g, self.key("cost", 0), cost=5)
        data = json_object(ex)
        ok = ex.status == 200 and bool(data) and data.get("remaining") == limit - 5
        g.check(
            "contract.cost",
            "cost spends several units at once",
            ok,
            exchange=ex,
            expected=f"200 with remaining {limit - 5}",
            actual=f"{ex.status} {ex.text(200)}",
        )
        g.progress(0.55)

        await self.atomicity(g, limit)

    def bad_inputs(self, g: Grade) -> list[BadInput]:
        def check(label: str, **kw: Any) -> BadInput:
            return BadInput(label, "POST", "/v1/check", **kw)

        return [
            check("missing key", json={"cost": 1}),
            check("empty key", json={"key": ""}),
            check("key of 129 characters", json={"key": "k" * 129}),
            check("key not a string", json={"key": 42}),
            check("cost 0", json={"key": self.key("bad", 0), "cost": 0}),
            check("body not JSON", body=b"key=abc", headers={"Content-Type": "text/plain"}),
        ]

    async def atomicity(self, g: Grade, limit: int) -> None:
        """Fire 2×RATE_LIMIT concurrent requests at each of several fresh keys."""
        keys = [self.key("burst", i) for i in range(BURST_KEYS)]
        calls = [("POST", "/v1/check", check_request(k)) for k in keys for _ in range(2 * limit)]
        exchanges = await g.burst(calls)
        results: dict[str, list[bool]] = defaultdict(list)
        errors = 0
        for (_, _, kw), ex in zip(calls, exchanges, strict=True):
            if ex.status in (200, 429):
                results[kw["json"]["key"]].append(ex.status == 200)
            else:
                errors += 1
        over, per_key = burst_over_admission(results, limit)
        under = sum(max(0, limit - sum(v)) for k, v in results.items() if len(v) == 2 * limit)
        g.metric("accuracy.over_admitted", over)
        g.metric("accuracy.under_admitted", under)
        worst = max(per_key.items(), key=lambda kv: kv[1], default=(None, 0))
        if errors > len(calls) * 0.1:
            g.check(
                "accuracy.atomic",
                "No key is over-admitted under concurrency",
                Status.ERROR,
                detail=f"{errors} of {len(calls)} concurrent requests failed; atomicity "
                "could not be judged",
            )
            return
        g.check(
            "accuracy.atomic",
            "No key is over-admitted under concurrency",
            over == 0,
            detail=(
                f"{2 * limit} concurrent requests per fresh key on {BURST_KEYS} keys: "
                f"{over} admitted beyond RATE_LIMIT={limit} in total"
                + (f"; worst key admitted {limit + worst[1]}" if over else "")
                + (f"; {errors} requests failed" if errors else "")
            ),
            expected=f"at most {limit} allowed per key",
            actual=f"{limit + worst[1]} allowed for one key" if over else f"at most {limit}",
            evidence={
                "curl": f"seq {2 * limit} | xargs -P {2 * limit} -I{{}} "
                f"curl -s -XPOST {g.target.url.rstrip('/')}/v1/check "
                "-H 'Content-Type: application/json' -d '{\"key\": \"fresh-key\"}'"
            },
        )

    # -- load and faults --------------------------------------------------------------
    def traffic(self, g: Grade, segment: str, duration_s: float) -> LoadPlan:
        """Checks on LOAD_KEYS keys picked by the seed, at the graded rate; the fault run's
        answers are kept for :meth:`fault_modes`."""
        rate = self.spec.grading.rate
        total = int(rate * duration_s) + 1
        picks = [g.rng.randrange(LOAD_KEYS) for _ in range(total)]
        bodies = [json.dumps({"key": self.key(segment, i)}).encode() for i in range(LOAD_KEYS)]
        headers = JSON_HEADERS

        def make(i: int) -> Request:
            return Request("POST", "/v1/check", bodies[picks[i % total]], headers)

        def classify(_req: Request, resp: Response) -> str | None:
            """A check answered as the contract says, status *and* body: 200 with
            ``allowed: true``, or 429 with ``allowed: false``."""
            if resp.status not in (200, 429):
                return f"http_{resp.status}"
            try:
                data = json.loads(resp.body)
            except ValueError:
                return "not_json"
            allowed = data.get("allowed") if isinstance(data, dict) else None
            return None if allowed is (resp.status == 200) else "wrong_body"

        plan = LoadPlan(rate=rate, duration_s=duration_s, make_request=make, classify=classify)
        if segment == "faults":
            self.fault_offset_s = g.timeline_end_s
            plan.on_result = lambda _i, _req, resp, _kind, at_s, done_s: self.fault_answers.append(
                (at_s, done_s, resp.status if resp is not None else 0)
            )
        return plan

    async def probe(self, g: Grade, key: str, at_s: float, t0: float) -> None:
        """One boundary-probe check, sent ``at_s`` after ``t0`` and recorded in the history."""
        await asyncio.sleep(max(0.0, t0 + at_s - time.monotonic()))
        op = self.probes.invoke(process=0, kind="check", key=key, invoked_s=time.monotonic() - t0)
        ex = await self.check(g, key)
        data = json_object(ex)
        allowed = data.get("allowed") if data is not None else None
        # Only a contract answer tells admitted from refused; anything else is unknown.
        outcome = {(200, True): "ok", (429, False): "failed"}.get((ex.status, allowed), "unknown")
        self.probes.complete(op, outcome, {}, time.monotonic() - t0)

    async def boundary_probes(self, g: Grade, duration_s: float) -> None:
        """Clients that look for the algorithm's burst at a window's edge.

        A steady client (every 100 ms) finds windows aligned to the clock, and — asking on
        past two windows, across the fault run — shows whether a refused client is admitted
        again; an edge client opens a window, spends the rest of its budget just before that
        window ends and asks again right after — the worst case for windows that start at a
        key's first request.
        """
        limit = g.param_int("RATE_LIMIT")
        window = g.param_float("RATE_WINDOW_SECONDS")
        t0 = time.monotonic()
        # The steady client asks past two windows, so that a client refused in the first one
        # must have been admitted again before it stops (the "at least" side of the limit).
        steady_s = max(duration_s, 2 * window + 2 * READMIT_TOLERANCE_S)
        sends = [
            (self.key("steady", 0), t * STEADY_PROBE_INTERVAL_S)
            for t in range(int(steady_s / STEADY_PROBE_INTERVAL_S))
        ]
        edge = self.key("edge", 0)
        if window + EDGE_FOLLOW_S < duration_s:
            sends.append((edge, 0.0))
            lead = window - EDGE_LEAD_S
            sends += [(edge, lead + 0.3 * i / limit) for i in range(limit - 1)]
            sends += [(edge, window + 0.05 * i) for i in range(int(EDGE_FOLLOW_S / 0.05))]
        await asyncio.gather(*(self.probe(g, key, at, t0) for key, at in sends))

    async def load(self, g: Grade) -> None:
        """The engine's steady and fault runs, with the boundary probes alongside both."""
        probes = asyncio.create_task(self.boundary_probes(g, self.spec.grading.duration_s))
        try:
            await super().load(g)
        finally:
            await probes

    def faulted(self, g: Grade, result: LoadResult, windows: list[FaultWindow]) -> None:
        self.fault_modes(g, windows, self.fault_answers, self.fault_offset_s)
        g.metric("faults.errors", sum(w.errors_during for w in windows))
        super().faulted(g, result, windows)

    @staticmethod
    def fault_modes(
        g: Grade, windows: list[Any], answers: list[tuple[float, float, int]], offset_s: float
    ) -> None:
        """How the service answered while each store was away: ``faults.<resource>.admitted``,
        ``.refused`` and ``.failed`` — shares of the checks sent during the outage, a check
        still unanswered when the store came back counting as failed (it stalled). The
        service failed open (kept admitting), closed (refused) or not at all (errors)."""
        for w in windows:
            end = w.healed_at_s if w.healed_at_s is not None else math.inf
            inside = [
                st if done + offset_s < end else 0
                for at, done, st in answers
                if w.at_s <= at + offset_s < end
            ]
            if not inside:
                continue
            shares = {
                "admitted": sum(st == 200 for st in inside) / len(inside),
                "refused": sum(st == 429 for st in inside) / len(inside),
            }
            shares["failed"] = 1 - shares["admitted"] - shares["refused"]
            for name, share in shares.items():
                g.metric(f"faults.{w.resource}.{name}", round(share, 3))
            mode = max(shares, key=lambda k: shares[k])
            w.observed += {
                "admitted": "; while it was away the service kept admitting (fail-open)",
                "refused": "; while it was away the service refused (fail-closed)",
                "failed": "; while it was away the service answered errors (neither open nor closed)",
            }[mode]
        if windows:  # the report's fault outcomes carry the mode too
            g.report.faults[-len(windows) :] = [w.to_outcome() for w in windows]

    # -- verification -----------------------------------------------------------------
    async def verify(self, g: Grade) -> None:
        limit = g.param_int("RATE_LIMIT")
        window = g.param_float("RATE_WINDOW_SECONDS")
        found = over_admission(self.probes, limit=limit, window_s=window)
        g.metric("accuracy.boundary_burst", found.counts.get("boundary_burst", 0))
        starved = starvation(self.probes, window, tolerance_s=READMIT_TOLERANCE_S)
        lockout = starved.counts.get("longest_lockout_s")
        g.metric("accuracy.longest_lockout_s", lockout)
        first = starved.anomalies[0]["message"] if starved.anomalies else ""
        answered = sum(op.outcome != "unknown" for op in self.probes.ops)
        judged = starved.valid != "unknown" and answered * 2 >= len(self.probes.ops) > 0
        g.check(
            "accuracy.readmitted",
            "A refused client that keeps asking is admitted again within one window",
            starved.valid is True if judged else Status.ERROR,
            detail=(first or starved.reason)
            if judged
            else f"only {answered} of {len(self.probes.ops)} probe checks got a contract "
            "answer (200 allowed / 429 refused); re-admission could not be judged",
            expected=f"admitted again within {window:g} s (+{READMIT_TOLERANCE_S:g} s)",
            actual=f"longest lockout {lockout} s" if lockout is not None else None,
        )
