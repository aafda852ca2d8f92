"""Grades a rate limiter: the contract on keys from its whole domain, atomicity under
concurrency (bursts until a race of a stated width would have shown), load, its stores paused."""

from __future__ import annotations

import asyncio
import json
import math
import random
import secrets
import time
from collections import defaultdict
from typing import Any

from challenges.schema import ChallengeSpec
from grading import JSON_HEADERS, answered, domain, json_body, json_object, races
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
MAX_KEY = 128  # the contract's longest key, in characters
# the race accuracy.atomic must see: a key's read and its write 1 ms apart (two store round
# trips; the flawed racy fixture's are 5 ms apart, a wider race, seen more surely)
RACE_WINDOW_S = 0.001
MAX_BURSTS, BURSTS_BUDGET_S = 8, 10.0  # …bursting until it would miss one at most 1 in 1000
STEADY_PROBE_INTERVAL_S = 0.1  # a steady client: catches windows aligned to the clock
EDGE_LEAD_S = 0.6  # an edge client spends its budget this long before its window ends…
EDGE_FOLLOW_S = 1.5  # …and keeps asking this long after
# a refused client that keeps asking is admitted again within a window + this
READMIT_TOLERANCE_S = 1.0


def check_body(key: str, cost: int | None = None, *, utf8: bool = True) -> bytes:
    """A check's JSON body: characters beyond ASCII as raw UTF-8, or as ``\\u`` escapes."""
    payload = {"key": key} if cost is None else {"key": key, "cost": cost}
    return json.dumps(payload, ensure_ascii=not utf8).encode()


def check_request(key: str, cost: int | None = None) -> dict[str, Any]:
    """``Grade.request``'s keyword arguments for one check (its body raw UTF-8)."""
    return {"body": check_body(key, cost), "headers": dict(JSON_HEADERS)}


def decided(ex: Exchange | Response) -> bool:
    """A contract answer: 200 allowed, or 429 refused."""
    return answered(ex, 200, allowed=True) or answered(ex, 429, allowed=False)


class RateLimiterScenario(StandardScenario):
    checks = (
        "contract.healthz",
        "contract.allow-first",
        "contract.remaining",
        "contract.deny-over-limit",
        "contract.retry-after",
        "contract.keys-independent",
        "contract.cost",
        "contract.key-domain",
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

    def key(self, rng: random.Random, kind: str, i: int = 0, length: int = 0) -> str:
        """A fresh key from the contract's whole domain (:func:`grading.domain.tagged`), unique
        by its tag ``kind-nonce-i``; ``length`` characters, drawn from ``rng`` when 0."""
        tag = f"{kind}-{self.nonce}-{i}"
        n = length or rng.randint(len(tag), MAX_KEY)
        return domain.tagged(rng, tag, n, limit=MAX_KEY)

    async def check(self, g: Grade, key: str, cost: int | None = None) -> Exchange:
        return await g.request("POST", "/v1/check", **check_request(key, cost))

    # -- contract -------------------------------------------------------------------------
    async def cases(self, g: Grade) -> None:
        limit = g.param_int("RATE_LIMIT")
        window_ms = g.param_float("RATE_WINDOW_SECONDS") * 1000

        key = self.key(g.rng, "first")
        ex = await self.check(g, key)
        g.check(
            "contract.allow-first",
            "A fresh key is allowed, with remaining = RATE_LIMIT - 1",
            answered(ex, 200, allowed=True, remaining=limit - 1),
            exchange=ex,
            expected=f'200 {{"allowed": true, "remaining": {limit - 1}}}',
        )
        g.progress(0.2)

        ok = True
        for want in range(limit - 2, -1, -1):
            ex = await self.check(g, key)
            if not (ok := answered(ex, 200, remaining=want)):
                break
        g.check(
            "contract.remaining",
            "remaining counts down to 0 within the window",
            ok,
            detail="" if ok else f"after {limit - 1 - want} further requests",
            exchange=None if ok else ex,
            expected=None if ok else f"200 with remaining {want}",
        )
        g.progress(0.35)

        ex = await self.check(g, key)
        g.check(
            "contract.deny-over-limit",
            "Request RATE_LIMIT + 1 is refused with 429",
            answered(ex, 429, allowed=False),
            exchange=ex,
            expected='429 {"allowed": false, "retry_after_ms": n}',
        )
        retry = (json_object(ex) or {}).get("retry_after_ms")
        ok = isinstance(retry, int | float) and not isinstance(retry, bool)
        g.check(
            "contract.retry-after",
            "retry_after_ms is a positive wait within one window",
            ok and 0 < retry <= window_ms + 1000,
            exchange=ex,
            expected=f"0 < retry_after_ms <= {window_ms:.0f}",
            actual=retry,
        )
        g.progress(0.45)

        ex = await self.check(g, self.key(g.rng, "other"))
        g.check(
            "contract.keys-independent",
            "Another key keeps its own budget",
            answered(ex, 200, allowed=True),
            exchange=ex,
            expected="200 allowed",
        )
        for i, cost in enumerate((g.rng.randint(2, limit - 1), limit)):  # the whole budget too
            ex = await self.check(g, self.key(g.rng, "cost", i), cost=cost)
            if not answered(ex, 200, remaining=limit - cost):
                break
        g.check(
            "contract.cost",
            "cost spends several units at once, up to the whole budget",
            answered(ex, 200, remaining=limit - cost),
            exchange=ex,
            expected=f"200 with remaining {limit - cost} after a cost of {cost}",
        )
        g.progress(0.5)
        await self.key_domain(g, limit)
        g.progress(0.55)
        await self.atomicity(g, limit)

    async def key_domain(self, g: Grade, limit: int) -> None:
        """``contract.key-domain``: keys from the whole domain are accepted, each with its own
        budget — 1 and MAX_KEY characters, every class of :mod:`grading.domain`, keys that
        differ only in their last character or in one character beyond ASCII."""
        sends = domain.edge_texts(g.rng, f"domain-{self.nonce}", MAX_KEY)
        first = {"allowed": True, "remaining": limit - 1}
        for case in sends:
            what, key, fresh = case
            ex = await self.check(g, key)
            ok = answered(ex, 200, **first) if fresh else decided(ex)
            if not ok:
                break
        shared = not ok and answered(ex, 200, remaining=limit - 2)
        g.check(
            "contract.key-domain",
            f"Any key of 1..{MAX_KEY} characters is accepted, with a budget of its own",
            ok,
            detail=""
            if ok
            else f"{what}: expected {f'200 {json.dumps(first)}' if fresh else '200 or 429'}, "
            f"got {ex.status} {ex.text(200)}"
            + (
                " — the budget of the key before it: keys cut short, or characters replaced?"
                if shared
                else ""
            ),
            exchange=None if ok else ex,
            evidence=None if ok else {"key": key},
        )

    def bad_inputs(self, g: Grade) -> list[BadInput]:
        def check(label: str, **kw: Any) -> BadInput:
            return BadInput(label, "POST", "/v1/check", **kw)

        return [
            check("missing key", json={"cost": 1}),
            check("empty key", json={"key": ""}),
            check("key of 129 characters", json={"key": "k" * 129}),
            check("key not a string", json={"key": 42}),
            check("cost 0", json={"key": f"bad-{self.nonce}", "cost": 0}),
            check("body not JSON", body=b"key=abc", headers={"Content-Type": "text/plain"}),
        ]

    async def atomicity(self, g: Grade, limit: int) -> None:
        """Fire 2×RATE_LIMIT concurrent requests at each of several fresh keys, burst after
        burst (:func:`grading.races.search`) until a race RACE_WINDOW_S wide would have been
        seen but for a chance of at most 1 in 1000, or the budget ends."""
        results: dict[str, list[bool]] = defaultdict(list)
        sent = errors = 0

        async def burst(n: int) -> tuple[bool, list[float]]:
            nonlocal sent, errors
            keys = [self.key(g.rng, f"burst{n}", i) for i in range(BURST_KEYS)]
            calls = {k: [("POST", "/v1/check", check_request(k))] * (2 * limit) for k in keys}
            got, chances = await races.trials(g, calls, RACE_WINDOW_S, decided)
            for key, exchanges in got.items():
                results[key] += [ex.status == 200 for ex in exchanges if decided(ex)]
            sent += len(keys) * 2 * limit
            errors = sent - sum(map(len, results.values()))
            over, _ = burst_over_admission({k: results[k] for k in keys}, limit)
            return over > 0, chances

        found = await races.search(
            burst, window_s=RACE_WINDOW_S, max_bursts=MAX_BURSTS, budget_s=BURSTS_BUDGET_S
        )
        over, per_key = burst_over_admission(results, limit)
        under = sum(max(0, limit - sum(v)) for k, v in results.items() if len(v) == 2 * limit)
        g.metric("accuracy.over_admitted", over)
        g.metric("accuracy.under_admitted", under)
        g.metric("accuracy.atomic.miss_probability", found.miss_metric)
        worst = limit + max(per_key.values(), default=0)
        judged = errors <= sent * 0.1
        g.check(
            "accuracy.atomic",
            "No key is over-admitted under concurrency",
            (over == 0) if judged else Status.ERROR,
            detail=(
                f"{2 * limit} concurrent requests per fresh key on {found.bursts * BURST_KEYS} "
                f"keys: {over} admitted beyond RATE_LIMIT={limit} in total"
                + (f"; worst key admitted {worst}" if over else "")
                + (f"; {errors} requests failed" if errors else "")
                + f"; {found.sentence()}"
            )
            if judged
            else f"{errors} of {sent} concurrent requests failed; atomicity could not be judged",
            expected=f"at most {limit} allowed per key",
            actual=f"{worst} allowed for one key" if over else f"at most {limit}",
            evidence={
                "curl": f"seq {2 * limit} | xargs -P {2 * limit} -I{{}} "
                f"curl -s -XPOST {g.target.url.rstrip('/')}/v1/check "
                "-H 'Content-Type: application/json' -d '{\"key\": \"fresh-key\"}'"
            },
        )

    # -- load and faults --------------------------------------------------------------
    def traffic(self, g: Grade, segment: str, duration_s: float) -> LoadPlan:
        """Checks at the graded rate on LOAD_KEYS keys from the contract's whole domain, picked
        by the seed (each drawn from its own seed when first sent; half as raw UTF-8, half as
        ``\\u`` escapes), their cost omitted, 1, or up to RATE_LIMIT; the fault run's answers
        are kept for :meth:`fault_modes`."""
        rate, limit = self.spec.grading.rate, g.param_int("RATE_LIMIT")
        total = int(rate * duration_s) + 1
        picks = [g.rng.randrange(LOAD_KEYS) for _ in range(total)]
        costs = [g.rng.choice((None, 1, g.rng.randint(2, limit))) for _ in range(total)]
        seed, keys = g.rng.getrandbits(64), {}  # key j drawn when first sent, from its own seed

        def make(i: int) -> Request:
            j = picks[i % total]
            if j not in keys:
                rng = random.Random(f"{seed}:{j}")
                keys[j] = (self.key(rng, segment, j), rng.random() < 0.5)  # UTF-8 or escaped
            key, utf8 = keys[j]
            return Request(
                "POST", "/v1/check", check_body(key, costs[i % total], utf8=utf8), JSON_HEADERS
            )

        def classify(_req: Request, resp: Response) -> str | None:
            """A check answered as the contract says, status *and* body: 200 with
            ``allowed: true``, or 429 with ``allowed: false``."""
            if resp.status not in (200, 429):
                return f"http_{resp.status}"
            if json_body(resp) is None:
                return "not_json"
            return None if decided(resp) else "wrong_body"

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
        # Only a contract answer tells admitted from refused; anything else is unknown.
        outcome = ("ok" if ex.status == 200 else "failed") if decided(ex) else "unknown"
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
        steady, edge = self.key(g.rng, "steady"), self.key(g.rng, "edge")
        t0 = time.monotonic()
        # The steady client asks past two windows, so that a client refused in the first one
        # must have been admitted again before it stops (the "at least" side of the limit).
        steady_s = max(duration_s, 2 * window + 2 * READMIT_TOLERANCE_S)
        sends = [
            (steady, t * STEADY_PROBE_INTERVAL_S)
            for t in range(int(steady_s / STEADY_PROBE_INTERVAL_S))
        ]
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
