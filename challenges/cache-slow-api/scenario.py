"""Grades a read API in front of a slow, rate-limited upstream: the contract, a stampede of reads
of one cold product, the staleness bound while the grader changes products upstream, upstream
calls per read, the tail under a hot key, and reads while Redis is paused."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import Counter, defaultdict
from typing import Any

from challenges.schema import ChallengeSpec
from grading import json_object, percentile
from grading.load import LoadPlan, Request, Response
from grading.provider import ProviderAdmin
from grading.scenario import MEASURED_SHARE, Grade
from grading.standard import BadInput, StandardScenario

PRODUCTS = 12  # products a load segment reads
WEIGHTS = [1 / (i + 1) ** 1.2 for i in range(PRODUCTS)]  # Zipf: product 0 is the hot key
STAMPEDE = 50  # concurrent reads of one cold product
MAX_STAMPEDE_CALLS = 3  # upstream calls they may cost
BUMP_EVERY_S = 0.5  # during a load the grader changes a product upstream this often
MARGIN_S = 0.25  # past the bound, before the contract's reads that must see a change


def product(pid: str, version: int) -> dict[str, Any]:
    """The upstream's record of ``pid`` at ``version``: every field moves with the version."""
    name = f"Product {pid} rev {version}"
    return {"id": pid, "name": name, "price_cents": 990 + version, "version": version}


class CacheSlowApiScenario(StandardScenario):
    # fmt: off
    checks = (
        "contract.healthz", "contract.read", "contract.not-found", "contract.bad-input",
        "contract.update-seen", "cache.single-flight", "cache.staleness",
        "upstream.calls-per-read", "load.latency", "load.errors", "faults.recovery",
        "faults.availability")
    # fmt: on
    admin: ProviderAdmin  # set by cases(): how the grader changes the upstream
    unit = "reads"
    availability_title = "Keeps answering reads while Redis is paused"

    def __init__(self, spec: ChallengeSpec) -> None:
        super().__init__(spec)
        self.nonce = secrets.token_hex(3)  # fresh ids on every grade
        self.changes: dict[str, list[tuple[int, float]]] = defaultdict(list)  # (version, ack)
        self.reads: list[tuple[str, int, float]] = []  # (id, version answered, monotonic start)
        self.sent: Counter[str] = Counter()  # segment -> reads sent
        self.answered: Counter[str] = Counter()  # segment -> reads answered as the contract says
        self.hot_ms: list[float] = []  # latencies of the hottest product's reads, steady run

    def pid(self, kind: str, i: int = 0) -> str:
        return f"{kind}-{self.nonce}-{i}"

    async def put(self, versions: dict[str, int | None]) -> None:
        """Set each product upstream at its version (None deletes it); note when it was done."""
        records = {f"/v1/products/{p}": v and product(p, v) for p, v in versions.items()}
        await self.admin.put_records(records)
        done = time.monotonic()
        for p, v in versions.items():
            if v is not None:
                self.changes[p].append((v, done))

    async def cases(self, g: Grade) -> None:
        if self.provider is None:
            raise RuntimeError("the grader sets the upstream's products: it needs the environment")
        self.admin = self.provider
        a, new, gone, unknown, cold = map(self.pid, ("a", "new", "gone", "none", "cold"))
        load = {self.pid(s, i): 1 for s in ("steady", "faults") for i in range(PRODUCTS)}
        await self.put({a: 1, gone: 1, cold: 1, **load})
        ex = await g.request("GET", f"/v1/products/{a}")
        g.check(
            "contract.read",
            "A product reads as the upstream has it",
            ex.status == 200 and json_object(ex) == product(a, 1),
            exchange=ex,
            expected=f"200 {product(a, 1)}",
        )
        before = [await g.request("GET", f"/v1/products/{p}") for p in (unknown, new, gone)]
        await self.put({a: 2, new: 1, gone: None})
        changed = time.monotonic()
        await self.stampede(g, cold)
        bound = g.param_float("STALE_SECONDS")
        await asyncio.sleep(max(0.0, changed + bound + MARGIN_S - time.monotonic()))
        after = [await g.request("GET", f"/v1/products/{p}") for p in (a, unknown, new, gone)]
        g.check(
            "contract.update-seen",
            f"A product changed upstream reads changed {bound:g} s later",
            after[0].status == 200 and json_object(after[0]) == product(a, 2),
            exchange=after[0],
            expected=f"200 with version 2, {bound:g} s after the change",
        )
        got = [e.status for e in before + after[1:]]
        g.check(
            "contract.not-found",
            f"404 for unknown ids, and a product created or deleted upstream shows within {bound:g} s",
            got == [404, 404, 200, 404, 200, 404] and json_object(after[2]) == product(new, 1),
            expected="[404, 404, 200] (unknown, new, gone), then [404, 200, 404]",
            actual=f"{got[:3]}, then {got[3:]}",
        )

    async def stampede(self, g: Grade, pid: str) -> None:
        answers = await g.burst([("GET", f"/v1/products/{pid}", {})] * STAMPEDE)
        good = sum(a.status == 200 and json_object(a) == product(pid, 1) for a in answers)
        calls = sum(c.path == f"/v1/products/{pid}" for c in await self.admin.calls())
        g.metric("cache.stampede_calls", calls)
        g.check(
            "cache.single-flight",
            f"{STAMPEDE} concurrent reads of a cold product share its upstream call",
            calls <= MAX_STAMPEDE_CALLS and good == STAMPEDE,
            expected=f"<= {MAX_STAMPEDE_CALLS} upstream calls, {STAMPEDE} answers 200",
            actual=f"{calls} upstream calls (cache.stampede_calls), {good} answers 200",
        )

    def bad_inputs(self, g: Grade) -> list[BadInput]:
        bad = {"too long": "a" * (g.param_int("MAX_ID_LENGTH") + 1), "upper case": "Widget-1"}
        bad |= {"a dot": "a.b", "an underscore": "a_b"}
        return [BadInput(f"id with {k}", "GET", f"/v1/products/{b}") for k, b in bad.items()]

    def traffic(self, g: Grade, segment: str, duration_s: float) -> LoadPlan:
        """Reads of PRODUCTS products with Zipf popularity (product 0 the hot key)."""
        ids = [self.pid(segment, i) for i in range(PRODUCTS)]
        rate = self.spec.grading.rate
        picks = g.rng.choices(ids, WEIGHTS, k=int(rate * duration_s) + 1)
        reads = [Request("GET", f"/v1/products/{pid}", tag=pid) for pid in picks]

        def make(i: int) -> Request:
            return reads[i % len(reads)]

        def classify(req: Request, resp: Response) -> str | None:
            if resp.status != 200:
                return f"http_{resp.status}"
            data = json_object(resp) or {}
            good = isinstance(v := data.get("version"), int) and data == product(req.tag, v)
            return None if good else "wrong_body"

        def on_result(_i: int, q: Request, r: Response | None, kind: str | None, *t: float) -> None:
            waited = t[1] - t[0]  # seconds from the read's schedule to its answer
            self.sent[segment] += 1
            if kind is None and r is not None:
                self.answered[segment] += 1
                version = (json_object(r) or {})["version"]
                self.reads.append((q.tag, version, time.monotonic() - waited))
            if segment == "steady" and q.tag == ids[0]:
                self.hot_ms.append(waited * 1000)

        return LoadPlan(rate, duration_s, make, classify=classify, on_result=on_result)

    async def alongside(self, g: Grade, segment: str, duration_s: float) -> None:
        """Change a product upstream every BUMP_EVERY_S, the hot one first."""
        order = [0] + g.rng.choices(range(PRODUCTS), WEIGHTS, k=int(duration_s / BUMP_EVERY_S) - 1)
        start = time.monotonic()
        for n, i in enumerate(order):
            await asyncio.sleep(max(0.0, start + (n + 0.5) * BUMP_EVERY_S - time.monotonic()))
            pid = self.pid(segment, i)
            await self.put({pid: self.changes[pid][-1][0] + 1})

    def staleness(self, pid: str, version: int, started: float) -> float:
        """How long before the read started the upstream had a newer version (0: none)."""
        return max(0.0, started - next((t for v, t in self.changes[pid] if v > version), started))

    async def verify(self, g: Grade) -> None:
        bound = g.param_float("STALE_SECONDS")
        ages = [self.staleness(*r) for r in self.reads]
        stale = sum(a > bound for a in ages)
        # Both gates are promises about reads answered: a service that refuses most reads (no
        # stale answer, no upstream call) has not kept them (grading.scenario.MEASURED_SHARE).
        share = len(ages) / max(1, sum(self.sent.values()))
        refused = (
            f"; only {share:.0%} of the reads were answered as the contract says"
            if share < MEASURED_SHARE
            else ""
        )
        g.metric("cache.reads_checked", len(ages))
        g.metric("cache.stale_reads", stale)
        g.metric("cache.worst_staleness_s", round(worst := max(ages, default=0.0), 2))
        g.check(
            "cache.staleness",
            f"No read under load answers a product more than {bound:g} s after it changed upstream",
            stale == 0 and not refused,
            expected=f"0 reads staler than {bound:g} s, most reads answered",
            actual=f"{stale} of {len(ages)} reads (cache.stale_reads), the worst {worst:.2f} s "
            f"old{refused}",
        )
        steady = {f"/v1/products/{self.pid('steady', i)}" for i in range(PRODUCTS)}
        calls = [c for c in await self.admin.calls() if c.path in steady]
        answered = self.answered["steady"]  # per read answered: refusing does not lower it
        per_read = round(len(calls) / answered, 3) if answered else None
        limit = g.param_float("MAX_CALLS_PER_READ")
        g.metric("upstream.calls_per_read", per_read)
        g.metric("upstream.throttled", sum(c.status == 429 for c in calls))
        g.metric("load.hot_key_p99_ms", round(percentile(self.hot_ms, 99) or 0.0, 2))
        g.check(
            "upstream.calls-per-read",
            f"At most {limit:g} upstream calls per read in the steady run",
            per_read is not None and per_read <= limit and not refused,
            expected=f"upstream.calls_per_read <= {limit:g}, most reads answered",
            actual=f"{per_read} ({len(calls)} upstream calls for {answered} reads answered of "
            f"{self.sent['steady']}){refused}",
        )
