"""Grades a URL shortener: the contract, Zipf-distributed redirects under load while hot links
change, a Redis outage, and whether any redirect answered a target already replaced."""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import Awaitable, Sequence
from typing import Any, NamedTuple

import numpy as np

from challenges.schema import ChallengeSpec
from grading import fingerprint, json_object
from grading.checkers import stale_reads
from grading.history import History, Outcome
from grading.http import Exchange
from grading.load import LoadPlan, LoadResult, Request, Response
from grading.nemesis import FaultStep, FaultWindow
from grading.report import Status
from grading.scenario import Grade
from grading.standard import BadInput, StandardScenario

CODE_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
LINKS = 1000  # links created before the load; read with Zipf popularity
ZIPF_S = 1.1
HOT = 16  # the most popular links: these are updated, deleted and probed during the load
WRITE_EVERY_S = 0.25  # one update of a hot link this often…
DELETES_PER_RUN = 2  # …and a few deletes late in each run
PROBE_RATE = 150.0  # redirects of hot links per second whose Location is recorded
PROBE_IN_FLIGHT = 64
RACE_PROBE_OFFSETS_MS = (0.0, 0.3, 0.6, 1.0, 1.5, 2.0, 3.0, 4.5)  # reads sent while a PUT flies
RACE_WINDOW_MS = 1.0  # the race the detection estimate is stated for: a window this wide
WARM_UP = 200  # links redirected once, unmeasured, before the load


def location(ex: Exchange) -> str | None:
    for name, value in ex.response_headers.items():
        if name.lower() == "location":
            return value
    return None


def code_of(ex: Exchange) -> str | None:
    """The code a create answered, or None when it answered none usable."""
    data = json_object(ex)
    code = data.get("code") if data is not None else None
    return code if isinstance(code, str) and CODE_RE.fullmatch(code) else None


class Write(NamedTuple):
    at_s: float
    kind: str  # "write" (PUT) or "delete"
    rank: int


class UrlShortenerScenario(StandardScenario):
    checks = (
        "contract.healthz",
        "contract.create",
        "contract.redirect",
        "contract.unknown",
        "contract.update",
        "contract.delete",
        "contract.bad-input",
        "cache.fresh",
        "links.resolve",
        "load.latency",
        "load.errors",
        "faults.recovery",
        "faults.availability",
    )
    unit = "redirects"
    availability_title = "Keeps redirecting while Redis is down"

    def __init__(self, spec: ChallengeSpec) -> None:
        super().__init__(spec)
        self.nonce = secrets.token_hex(3)  # fresh URLs on every run; never affects the verdict
        self.history = History()
        self.created: str | None = None  # the contract's link, deleted by its lifecycle
        self.codes: list[str] = []  # by popularity rank (0 = most popular)
        self.versions = 0
        self.deleted: set[int] = set()  # ranks whose deletion a load run scheduled
        self.schedules: dict[str, list[Write]] = {}  # segment -> its writes, drawn with its plan
        self.fault_run_start_s: float | None = None
        self.race_flights: list[tuple[float, int]] = []  # (write's flight s, reads during it)

    def url(self, *parts: object) -> str:
        return "https://example.com/" + "/".join(str(p) for p in (self.nonce, *parts))

    # -- contract -------------------------------------------------------------------------
    async def cases(self, g: Grade) -> None:
        target = self.url("docs", "page?q=a%20b&lang=en#top")
        ex = await g.request("POST", "/v1/links", json={"url": target})
        code = self.created = code_of(ex) if ex.status == 201 else None
        g.check(
            "contract.create",
            "POST /v1/links answers 201 with a code",
            code is not None,
            exchange=ex,
            expected='201 {"code": "<1..64 of A-Z a-z 0-9 _ ->"}',
            actual=f"{ex.status} {ex.text(200)}",
        )
        g.progress(0.2)
        if code is None:
            for check_id in ("contract.redirect", "contract.update", "contract.delete"):
                g.check(check_id, "Needs a created link", Status.FAIL, detail="no link created")
        else:
            await self.lifecycle(g, code, target)
        g.progress(0.6)

        unknown = "zz" + secrets.token_hex(4)
        ex = await g.request("GET", f"/{unknown}")
        g.check(
            "contract.unknown",
            "GET of an unknown code answers 404",
            ex.status == 404,
            exchange=ex,
            expected=404,
            actual=ex.status,
        )

    async def lifecycle(self, g: Grade, code: str, target: str) -> None:
        ex = await g.request("GET", f"/{code}")
        got = location(ex)
        g.check(
            "contract.redirect",
            "GET /{code} answers 302 with the stored URL in Location, byte for byte",
            ex.status == 302 and got == target,
            exchange=ex,
            expected=f"302 Location: {target}",
            actual=f"{ex.status} Location: {got}",
        )

        new = self.url("docs", "moved")
        put = await g.request("PUT", f"/v1/links/{code}", json={"url": new})
        after = await g.request("GET", f"/{code}")
        missing = await g.request("PUT", f"/v1/links/zz{secrets.token_hex(4)}", json={"url": new})
        steps = [
            ("PUT answers 200", put, put.status == 200),
            ("the next GET redirects to the new URL", after, location(after) == new),
            ("PUT of an unknown code answers 404", missing, missing.status == 404),
        ]
        bad = [(label, e) for label, e, ok in steps if not ok]
        g.check(
            "contract.update",
            "PUT changes where the code redirects, at once",
            not bad,
            detail="; ".join(label for label, _ in bad),
            exchange=bad[0][1] if bad else None,
            expected=None if not bad else f"{bad[0][0]} (new URL {new})",
            actual=None if not bad else f"{bad[0][1].status} Location: {location(bad[0][1])}",
            partial=1 - len(bad) / len(steps),
        )

        delete = await g.request("DELETE", f"/v1/links/{code}")
        gone = await g.request("GET", f"/{code}")
        steps = [
            ("DELETE answers 204", delete, delete.status == 204),
            ("the next GET answers 404", gone, gone.status == 404),
        ]
        bad = [(label, e) for label, e, ok in steps if not ok]
        g.check(
            "contract.delete",
            "DELETE answers 204, and the code is gone at once",
            not bad,
            detail="; ".join(label for label, _ in bad),
            exchange=bad[0][1] if bad else None,
            expected=bad[0][0] if bad else None,
            actual=f"{bad[0][1].status} {bad[0][1].text(120)}" if bad else None,
            partial=1 - len(bad) / len(steps),
        )

    def bad_inputs(self, g: Grade) -> list[BadInput]:
        def create(label: str, **kw: Any) -> BadInput:
            return BadInput(label, "POST", "/v1/links", **kw)

        cases = [
            create("body not JSON", body=b"url=https://example.com"),
            create("missing url", json={}),
            create("url not a string", json={"url": 42}),
            create("ftp scheme", json={"url": "ftp://example.com/f"}),
            create("not a URL", json={"url": "not a url"}),
            create("no host", json={"url": "https://"}),
            create("space inside", json={"url": "https://exa mple.com/"}),
        ]
        if self.created is not None:
            # The link was deleted by the lifecycle: a PUT may answer 404 before it reads the URL.
            path = f"/v1/links/{self.created}"
            cases.append(
                BadInput("PUT with a bad URL", "PUT", path, json={"url": ""}, also_ok=(404,))
            )
        return cases

    # -- load -----------------------------------------------------------------------------
    async def create_links(self, g: Grade) -> None:
        """Create LINKS links; the hot ones are recorded as the first writes of the history."""
        calls = [("POST", "/v1/links", {"json": {"url": self.url(i, "v0")}}) for i in range(LINKS)]
        t_before = self.history.now()
        exchanges = await g.burst(calls)
        t_after = self.history.now()
        for i, ex in enumerate(exchanges):
            code = code_of(ex) if ex.status == 201 else None
            if code is None:
                continue
            if len(self.codes) < HOT:
                op = self.history.invoke(
                    "setup", "write", code, self.url(i, "v0"), invoked_s=t_before
                )
                self.history.complete(op, "ok", completed_s=t_after)
            self.codes.append(code)

    def traffic(self, g: Grade, segment: str, duration_s: float) -> LoadPlan:
        """Redirects at the graded rate; link ``k`` (by rank) is read with weight 1/k^s.

        The segment's writes are drawn first (:meth:`alongside` makes them). Each answer is
        judged by the contract, not by its status alone: a ``302`` must carry a ``Location``
        that is one of the targets this link ever had, and a ``404`` is right only for a link
        whose deletion was scheduled.
        """
        self.schedules[segment] = self.writes(g, duration_s)
        if segment == "faults":
            self.fault_run_start_s = self.history.now()
        rate = self.spec.grading.rate
        total = int(rate * duration_s) + 1
        n = len(self.codes)
        weights = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** ZIPF_S
        rng = np.random.default_rng(g.rng.getrandbits(63))
        picks = rng.choice(n, size=total, p=weights / weights.sum())
        requests = [
            Request("GET", f"/{code}", tag=str(rank)) for rank, code in enumerate(self.codes)
        ]

        def make(i: int) -> Request:
            return requests[picks[i % total]]

        def classify(req: Request, resp: Response) -> str | None:
            rank = int(req.tag)
            if resp.status == 302:
                target = resp.headers.get("location")
                if target is None:
                    return "302_without_location"
                return None if target.startswith(self.url(rank, "v")) else "wrong_location"
            if resp.status == 404:
                return None if rank in self.deleted else "404_for_a_live_link"
            return f"http_{resp.status}"

        return LoadPlan(rate=rate, duration_s=duration_s, make_request=make, classify=classify)

    def writes(self, g: Grade, duration_s: float) -> list[Write]:
        """A seeded schedule: updates of hot links all along, a few deletes late in the run."""
        hot = min(HOT, len(self.codes))
        out: list[Write] = []
        candidates = [r for r in range(hot // 2, hot) if r not in self.deleted]
        for _ in range(min(DELETES_PER_RUN, len(candidates))):
            rank = candidates.pop(g.rng.randrange(len(candidates)))
            self.deleted.add(rank)
            out.append(Write(g.rng.uniform(0.5, 0.8) * duration_s, "delete", rank))
        alive = [r for r in range(hot) if r not in self.deleted]
        t = WRITE_EVERY_S
        while t < duration_s - 0.5:
            out.append(Write(t + g.rng.uniform(0, 0.05), "write", g.rng.choice(alive)))
            t += WRITE_EVERY_S
        return sorted(out, key=lambda w: w.at_s)

    async def writer(self, g: Grade, schedule: list[Write], t0: float) -> None:
        """The scheduled writes, each probed for the read/invalidate race: the link is read
        just before (so a cache holds it), then read again at fixed offsets while the write
        is in flight, then once after it was acknowledged. A cache that is invalidated
        before the database is written lets one of the in-flight reads put the old target
        back, and the read after the acknowledgement shows it — at every write, not by luck.
        """
        for w in schedule:
            await asyncio.sleep(max(0.0, t0 + w.at_s - time.monotonic()))
            code = self.codes[w.rank]
            await self.probe(g, code)  # the link is cached now, if the design caches
            if w.kind == "delete":
                op = self.history.invoke("writer", "delete", code)
                call = g.request("DELETE", f"/v1/links/{code}")
                want = 204
            else:
                self.versions += 1
                value = self.url(w.rank, f"v{self.versions}")
                op = self.history.invoke("writer", "write", code, value)
                call = g.request("PUT", f"/v1/links/{code}", json={"url": value})
                want = 200
            ex, in_flight = await self.race_probed(g, code, call)
            ok = ex.status == want
            outcome: Outcome = "ok" if ok else "failed" if ex.status in (400, 404) else "unknown"
            self.history.complete(op, outcome, {"status": ex.status})
            if op.completed_s is not None and op.invoked_s is not None:
                self.race_flights.append((op.completed_s - op.invoked_s, in_flight))
            await self.probe(g, code)  # sees a stale entry the race left behind

    async def race_probed(
        self, g: Grade, code: str, call: Awaitable[Exchange]
    ) -> tuple[Exchange, int]:
        """Run ``call`` with reads of ``code`` at RACE_PROBE_OFFSETS_MS after it left; return
        its exchange and how many of those reads were sent before it was answered."""
        write = asyncio.ensure_future(call)
        started = time.monotonic()
        sent = 0
        reads: list[asyncio.Task[None]] = []
        for offset_ms in RACE_PROBE_OFFSETS_MS:
            await asyncio.sleep(max(0.0, started + offset_ms / 1000 - time.monotonic()))
            if write.done():
                break
            reads.append(asyncio.create_task(self.probe(g, code)))
            sent += 1
        ex = await write
        await asyncio.gather(*reads)
        return ex, sent

    def race_detection(self) -> float:
        """The chance that a read/invalidate race RACE_WINDOW_MS wide, at a random point of
        a write's flight, was hit by at least one in-flight read, over all probed writes
        (each read covers about one window's width; reads are independent per write)."""
        miss = 1.0
        for flight_s, reads in self.race_flights:
            if flight_s > 0:
                miss *= 1 - min(1.0, reads * RACE_WINDOW_MS / 1000 / flight_s)
        return 1 - miss

    async def probe(self, g: Grade, code: str) -> None:
        op = self.history.invoke("reader", "read", code)
        ex = await g.request("GET", f"/{code}")
        if ex.status == 302:
            self.history.complete(op, "ok", {"value": location(ex), "status": 302})
        elif ex.status == 404:
            self.history.complete(op, "ok", {"value": None, "status": 404})
        else:
            self.history.complete(op, "unknown", {"status": ex.status, "error": ex.error})

    async def prober(self, g: Grade, duration_s: float) -> None:
        """Redirects of the hot links at PROBE_RATE, each recorded with its Location."""
        hot = self.codes[: min(HOT, len(self.codes))]
        tasks: set[asyncio.Task[None]] = set()
        t0 = time.monotonic()
        for i in range(int(PROBE_RATE * duration_s)):
            await asyncio.sleep(max(0.0, t0 + i / PROBE_RATE - time.monotonic()))
            if len(tasks) >= PROBE_IN_FLIGHT:
                continue  # the service is stalled; the load already measures that
            task = asyncio.create_task(self.probe(g, hot[i % len(hot)]))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)

    async def alongside(self, g: Grade, segment: str, duration_s: float) -> None:
        """The segment's writes of hot links, and redirects of them recorded for freshness."""
        t0 = time.monotonic()
        await asyncio.gather(
            self.writer(g, self.schedules.pop(segment), t0), self.prober(g, duration_s)
        )

    async def load(self, g: Grade) -> None:
        """The links first, then the engine's steady and fault runs."""
        await self.create_links(g)
        g.metric("links.created", len(self.codes))
        if len(self.codes) < 2 * HOT:
            judged = [f"load.{name}" for name in self.spec.thresholds]
            for check_id in (*judged, *self.fault_checks()):
                g.check(
                    check_id,
                    "Load with changing links",
                    Status.ERROR,
                    detail=f"only {len(self.codes)} of {LINKS} links could be created; "
                    f"the load needs at least {2 * HOT}",
                )
            return
        # Unmeasured warm-up: a service is not graded on its first second (pools, caches).
        await g.burst([("GET", f"/{code}", {}) for code in self.codes[:WARM_UP]])
        await super().load(g)

    async def segment(
        self, g: Grade, segment: str, duration_s: float, faults: Sequence[FaultStep] = ()
    ) -> tuple[LoadResult, list[FaultWindow]]:
        """A load segment; the steady one also measures how the design used each store."""
        if segment != "steady":
            return await super().segment(g, segment, duration_s, faults)
        before, sent = await g.usage_snapshot(), g.requests_sent
        ran = await super().segment(g, segment, duration_s, faults)
        await self.report_usage(g, before, g.requests_sent - sent)
        return ran

    async def report_usage(
        self, g: Grade, before: fingerprint.Snapshot | None, requests: int
    ) -> None:
        """How the steady run used each store, per request.

        Measured here rather than taken from the grade's fingerprint: killing Redis resets
        its command counters, so a fingerprint across the fault run cannot see a cache.
        """
        if before is None:
            return
        await asyncio.sleep(fingerprint.STATS_FLUSH_S)  # PostgreSQL publishes table statistics ~1/s
        after = await g.usage_snapshot()
        if after is None:
            return
        signals = fingerprint.diff(before, after, requests).signals
        g.metric("usage.redis_ops_per_request", signals.get("redis", {}).get("ops_per_request"))
        g.metric("usage.pg_scans_per_request", signals.get("postgres", {}).get("scans_per_request"))

    def faulted(self, g: Grade, result: LoadResult, windows: list[FaultWindow]) -> None:
        g.metric("faults.p99_ms", round(result.percentile_ms(99), 2))
        g.metric("faults.errors", sum(w.errors_during for w in windows))
        super().faulted(g, result, windows)

    # -- verification ---------------------------------------------------------------------
    def expected_targets(self) -> list[set[str | None]]:
        """Per created link (by rank), what a redirect of its code may answer now (None:
        404): its last acknowledged target, plus the targets of writes whose outcome is
        unknown since."""
        ops = [op for op in self.history.filter(kind=("write", "delete")) if op.process == "writer"]
        ops.sort(key=lambda op: op.invoked_s)
        expected: list[set[str | None]] = []
        for rank, code in enumerate(self.codes):
            now: set[str | None] = {self.url(rank, "v0")}
            for op in ops:
                if op.key != code:
                    continue
                value = None if op.kind == "delete" else op.value
                if op.outcome == "ok":
                    now = {value}
                elif op.outcome == "unknown":
                    now.add(value)
            expected.append(now)
        return expected

    async def verify_links(self, g: Grade) -> None:
        """``links.resolve`` (a gate): every link the grader created, not a sample, redirects
        to its own target after the load — a code handed out twice (a collision that
        overwrote an older link) or a target lost shows here."""
        expected = self.expected_targets()
        codes = list(dict.fromkeys(self.codes))
        exchanges = dict(
            zip(codes, await g.burst([("GET", f"/{code}", {}) for code in codes]), strict=True)
        )
        wrong: list[tuple[Exchange, set[str | None]]] = []
        for rank, code in enumerate(self.codes):
            ex = exchanges[code]
            got = location(ex) if ex.status == 302 else None if ex.status == 404 else "?"
            if got not in expected[rank]:
                wrong.append((ex, expected[rank]))
        reused = len(self.codes) - len(codes)
        g.metric("links.verified", len(self.codes))
        g.metric("links.wrong", len(wrong))
        g.metric("links.codes_reused", reused)
        first = wrong[0] if wrong else None
        g.check(
            "links.resolve",
            "Every created link redirects to its own target",
            not wrong,
            detail=(
                f"{len(wrong)} of {len(self.codes)} links created by the grader do not "
                "redirect to their own target"
                + (f"; {reused} codes were handed out for two different URLs" if reused else "")
            ),
            exchange=first[0] if first else None,
            expected=(
                "302 to " + " or ".join(sorted(t or "404" for t in first[1])) if first else None
            ),
            actual=(
                f"{first[0].status} {location(first[0]) or first[0].text(120)}" if first else None
            ),
        )

    async def verify(self, g: Grade) -> None:
        if self.codes:
            await self.verify_links(g)
        reads = self.history.filter(kind="read")
        found = stale_reads(self.history)
        stale, unwritten = found.counts.get("stale", 0), found.counts.get("unwritten", 0)
        g.metric("cache.stale_reads", stale)
        g.metric("cache.unwritten_reads", unwritten)
        g.metric("cache.reads_checked", found.counts.get("reads", 0))
        writes = [
            op for op in self.history.filter(kind=("write", "delete")) if op.process == "writer"
        ]
        g.metric("cache.writes_acknowledged", sum(op.outcome == "ok" for op in writes))
        if self.fault_run_start_s is not None:
            g.metric("cache.stale_reads_fault_run", self.stale_since(self.fault_run_start_s))
        detection = round(self.race_detection(), 4)
        g.metric("cache.race_writes_probed", len(self.race_flights))
        g.metric("cache.race_detection", detection)
        checked = found.counts.get("reads", 0)
        if checked < len(reads) / 2 or checked == 0:
            g.check(
                "cache.fresh",
                "No redirect answers a target already replaced",
                Status.ERROR,
                detail=f"only {checked} of {len(reads)} probe redirects were answered 302/404; "
                "freshness could not be judged",
            )
            return
        first = found.anomalies[0] if found.anomalies else None
        status = Status.PASS if found.valid is True else Status.FAIL
        if found.valid == "unknown":
            status = Status.WARN
        g.check(
            "cache.fresh",
            "No redirect answers a target already replaced",
            status,
            detail=(
                f"{checked} redirects of the {HOT} hot links checked against "
                f"{len(writes)} writes made during the "
                f"load: {stale} answered a target an acknowledged PUT or DELETE had already "
                f"replaced, {unwritten} answered a target never written. {found.reason} "
                f"Every write was probed with reads in flight: a read/invalidate race "
                f"{RACE_WINDOW_MS:g} ms wide would have been seen with probability "
                f"{detection:.4f}."
            ),
            expected="every redirect that starts after a PUT/DELETE was acknowledged sees it",
            actual=first["message"] if first else "no stale redirect",
            evidence={"anomalies": found.anomalies[:5]},
        )

    def stale_since(self, start_s: float) -> int:
        """Stale reads among the redirects sent from ``start_s`` on (the fault run)."""
        part = History(clock=lambda: 0.0, origin=0.0)
        part.ops = [op for op in self.history.ops if op.kind != "read" or op.invoked_s >= start_s]
        return int(stale_reads(part).counts.get("stale", 0))
