"""Grades an event-ingestion service: the contract and window semantics, batches under
load with a share retried (whole or overlapping), stores paused mid-load, then every
count compared with what was sent, and how fresh the counts are.

The data covers the contract's whole domain, seeded: batches of 1 to 500 events (at least
one of exactly 500 per run), event_ids repeated inside a batch, batches resent whole or in
part at gaps from a fraction of a second to the length of the grade (some after the fault
run, as a client's retry queue would), and paths with non-ASCII and reserved characters."""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any, NamedTuple
from urllib.parse import urlencode

from challenges.schema import ChallengeSpec
from grading import JSON_HEADERS, json_body, percentile, poll_until
from grading.checkers import CheckResult, counter_exactness
from grading.http import Exchange
from grading.load import LoadPlan, LoadResult, Request, Response
from grading.nemesis import FaultWindow
from grading.scenario import Grade
from grading.standard import BadInput, StandardScenario

SITES = 4
PATHS = (
    "/",
    "/pricing",
    "/docs",
    "/blog",
    "/about",
    "/signup",
    "/cart",
    "/search?q=a&b=c%20d",  # reserved characters: a path is any non-empty string
    "/ünïcode/页面",
    "/long/" + "x" * 200,
)
PATH_WEIGHTS = (30, 15, 12, 10, 8, 6, 4, 3, 3, 2)
SPAN_S = 3600  # event times spread over one hour
BATCH_SIZES = (10, 90)  # most batches
SINGLE_SHARE = 0.05  # batches of one event
LARGE_SHARE = 0.05  # batches of 400..500 events
MAX_BATCH = 500  # the contract's limit; one batch per load run is exactly this size
REPEAT_SHARE = 0.20  # batches that repeat some of their own event_ids
RESEND_SHARE = 0.15  # batches sent again as they were, after any earlier batch of the grade
OVERLAP_SHARE = 0.10  # batches holding half of an earlier batch plus new events
LATE_SHARE = 0.12  # batches resent once more after the fault run (tens of seconds later)
LATE_MAX = 40
SUBWINDOWS = 3  # per site, besides the whole hour
FRESHNESS_LIMIT_S = 5.0
MARKER_EVERY_S = 0.5
CONVERGE_S = 10.0  # how long counts may take to settle after the load
RESEND_BUDGET_S = 10.0
EXAMPLES = 5


class Ev(NamedTuple):
    event_id: str
    site: str
    path: str
    ts: int


class Batch(NamedTuple):
    key: str
    events: tuple[Ev, ...]
    origin: str | None = None  # the earlier batch this one resends, whole or in part

    def body(self) -> bytes:
        return batch_body(self.events)


def batch_body(events: Sequence[Ev]) -> bytes:
    """``POST /v1/events``'s body for ``events``."""
    return json.dumps({"events": [e._asdict() for e in events]}).encode()


def paths_of(data: Any) -> dict[str, int] | None:
    """The ``paths`` map of a stats answer without zero entries, or None when malformed."""
    if not isinstance(data, dict) or not isinstance(data.get("paths"), dict):
        return None
    paths = data["paths"]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in paths.values()):
        return None
    return {p: n for p, n in paths.items() if n}


class EventIngestionScenario(StandardScenario):
    checks = (
        "contract.healthz",
        "contract.accept",
        "contract.stats-window",
        "contract.retry",
        "contract.bad-input",
        "load.latency",
        "load.errors",
        "faults.availability",
        "stats.exact",
        "stats.freshness",
    )
    unit = "batches"
    availability_title = "Keeps accepting batches while a store is paused"
    latency_metric = "ingest"

    def __init__(self, spec: ChallengeSpec) -> None:
        super().__init__(spec)
        self.nonce = secrets.token_hex(4)  # fresh ids on every run; never affects the verdict
        self.base = int(time.time()) - 2 * SPAN_S
        self.sites = [f"site-{self.nonce}-{i}" for i in range(SITES)]
        self.counter = 0
        self.batches: list[Batch] = []
        self.accepted: set[str] = set()  # batch keys answered 2xx
        self.sent_at: dict[str, float] = {}  # batch key -> monotonic time of its first send
        self.freshness: list[float] = []

    # -- helpers ----------------------------------------------------------------------
    def fresh(self, g: Grade) -> Ev:
        self.counter += 1
        return Ev(
            f"{self.nonce}-{self.counter}",
            g.rng.choice(self.sites),
            g.rng.choices(PATHS, PATH_WEIGHTS)[0],
            self.base + g.rng.randrange(SPAN_S),
        )

    async def post(self, g: Grade, events: Sequence[Ev]) -> Exchange:
        return await g.request(
            "POST", "/v1/events", body=batch_body(events), headers=dict(JSON_HEADERS)
        )

    def fresh_batch(self, g: Grade, size: int) -> tuple[Ev, ...]:
        """``size`` entries of new events; a share of batches repeat some of their own
        event_ids (a client that queued one event twice), so fewer distinct events."""
        if size < 2 or g.rng.random() >= REPEAT_SHARE:
            return tuple(self.fresh(g) for _ in range(size))
        repeats = g.rng.randint(1, max(1, size // 10))
        events = [self.fresh(g) for _ in range(size - repeats)]
        for _ in range(repeats):
            events.insert(g.rng.randrange(len(events) + 1), g.rng.choice(events))
        return tuple(events)

    def batch_size(self, g: Grade) -> int:
        r = g.rng.random()
        if r < SINGLE_SHARE:
            return 1
        if r < SINGLE_SHARE + LARGE_SHARE:
            return g.rng.randint(400, MAX_BATCH)
        return g.rng.randint(*BATCH_SIZES)

    async def stats(self, g: Grade, site: str, start: int, end: int) -> Exchange:
        query = urlencode({"site": site, "from": start, "to": end})
        return await g.request("GET", f"/v1/stats?{query}")

    async def until(
        self, g: Grade, site: str, start: int, end: int, want: int, limit_s: float
    ) -> tuple[Exchange, float | None]:
        """Poll stats until ``total >= want``; return the last answer and how long it took."""

        def counted(ex: Exchange) -> bool:
            paths = paths_of(json_body(ex))
            return ex.status == 200 and paths is not None and sum(paths.values()) >= want

        return await poll_until(
            lambda: self.stats(g, site, start, end), counted, limit_s=limit_s, every_s=0.05
        )

    # -- contract ---------------------------------------------------------------------
    async def cases(self, g: Grade) -> None:
        site, other = f"c-{self.nonce}", f"c-{self.nonce}-other"
        b = self.base - SPAN_S
        cid = f"c-{self.nonce}"
        batch = [
            Ev(f"{cid}-1", site, "/a", b),
            Ev(f"{cid}-2", site, "/a", b + 1),
            Ev(f"{cid}-3", site, "/b", b + 1),
            Ev(f"{cid}-4", site, "/b", b + 2),  # at `to` of the narrow window: left out
            Ev(f"{cid}-5", site, "/a", b - 1),  # before `from`: left out
            Ev(f"{cid}-6", site, "/c", b + 5),
            Ev(f"{cid}-7", other, "/a", b),  # another site
        ]
        ex = await self.post(g, batch)
        g.check(
            "contract.accept",
            "A batch of valid events is accepted with 202",
            ex.status == 202,
            exchange=ex,
            expected=202,
            actual=f"{ex.status} {ex.text(200)}",
        )
        g.progress(0.2)
        await self.window_semantics(g, site, b)
        g.progress(0.5)
        await self.retry(g, site, b, batch, cid)

    async def window_semantics(self, g: Grade, site: str, b: int) -> None:
        title = "Stats count one site's events with from <= ts < to, per path"
        ex, took = await self.until(g, site, b - 1, b + 6, 6, CONVERGE_S)
        if took is None:
            g.check(
                "contract.stats-window",
                title,
                False,
                detail=f"the 6 events of the site never all showed in {CONVERGE_S:g} s",
                exchange=ex,
                expected='{"total": 6, ...}',
                actual=f"{ex.status} {ex.text(200)}",
            )
            return
        cases = [
            ((site, b - 1, b + 6), {"/a": 3, "/b": 2, "/c": 1}),
            ((site, b, b + 2), {"/a": 2, "/b": 1}),
            ((site, b + 2, b + 3), {"/b": 1}),
            ((site, b + 6, b + 100), {}),
            ((f"nobody-{self.nonce}", b - 1, b + 6), {}),
        ]
        for (s, start, end), paths in cases:
            ex = await self.stats(g, s, start, end)
            data = json_body(ex)
            got = paths_of(data)
            total = data.get("total") if isinstance(data, dict) else None
            if ex.status != 200 or got != paths or total != sum(paths.values()):
                g.check(
                    "contract.stats-window",
                    title,
                    False,
                    detail=f"site {s}, from {start} to {end}",
                    exchange=ex,
                    expected=f"200 {json.dumps({'total': sum(paths.values()), 'paths': paths})}",
                    actual=f"{ex.status} {ex.text(300)}",
                )
                return
        g.check(
            "contract.stats-window",
            title,
            True,
            detail=f"{len(cases)} windows exact; the first batch was visible after {took:.2f} s",
        )

    async def retry(self, g: Grade, site: str, b: int, batch: list[Ev], cid: str) -> None:
        """The same batch again, then one overlapping it, then one that repeats an event_id
        of its own: after each, every event is counted once."""
        title = "A retried or overlapping batch, or an event_id repeated in a batch, counts once"
        steps = [
            ("the 7-event batch sent again", batch, {"/a": 3, "/b": 2, "/c": 1}),
            (
                "2 of its events with 1 new one",
                [batch[0], batch[5], Ev(f"{cid}-8", site, "/c", b + 3)],
                {"/a": 3, "/b": 2, "/c": 2},
            ),
            (
                "a batch holding one new event_id three times, and one new event",
                [
                    Ev(f"{cid}-9", site, "/d", b + 4),
                    Ev(f"{cid}-10", site, "/d", b + 4),
                    Ev(f"{cid}-9", site, "/d", b + 4),
                    Ev(f"{cid}-9", site, "/d", b + 4),
                ],
                {"/a": 3, "/b": 2, "/c": 2, "/d": 2},
            ),
        ]
        for label, events, want in steps:
            sent = await self.post(g, events)
            if sent.status != 202:
                g.check(
                    "contract.retry",
                    title,
                    False,
                    detail=f"{label}: not accepted",
                    exchange=sent,
                    expected=202,
                    actual=f"{sent.status} {sent.text(200)}",
                )
                return
            distinct = sum(want.values())
            ex, took = await self.until(g, site, b - 1, b + 6, distinct, CONVERGE_S)
            await asyncio.sleep(max(0.5, 2 * (took or 0.0)))  # time for a double count to show
            ex = await self.stats(g, site, b - 1, b + 6)
            got = paths_of(json_body(ex))
            if ex.status != 200 or got != want:
                g.check(
                    "contract.retry",
                    title,
                    False,
                    detail=f"after {label}",
                    exchange=ex,
                    expected=f"200 with paths {json.dumps(want)} ({distinct} distinct events)",
                    actual=f"{ex.status} {ex.text(300)}",
                )
                return
        g.check(
            "contract.retry",
            title,
            True,
            detail="; ".join(label for label, _, _ in steps) + ": each event counted once",
        )

    def bad_inputs(self, g: Grade) -> list[BadInput]:
        ev = {
            "event_id": f"bad-{self.nonce}",
            "site": f"bad-{self.nonce}",
            "path": "/",
            "ts": self.base,
        }
        too_many = [{**ev, "event_id": f"bad-{self.nonce}-{i}"} for i in range(501)]

        def events(label: str, **kw: Any) -> BadInput:
            return BadInput(label, "POST", "/v1/events", **kw)

        def without(field: str) -> dict[str, Any]:
            return {"events": [{k: v for k, v in ev.items() if k != field}]}

        return [
            events("501 events", json={"events": too_many}),
            events("body not JSON", body=b"events=1", headers={"Content-Type": "text/plain"}),
            events("events not a list", json={"events": "x"}),
            events("event without ts", json=without("ts")),
            events("ts a string", json={"events": [{**ev, "ts": "soon"}]}),
            events("event without site", json=without("site")),
            BadInput("stats without site", "GET", f"/v1/stats?from=0&to={self.base}"),
            BadInput(
                "stats with from not a number",
                "GET",
                f"/v1/stats?site=x&from=abc&to={self.base}",
            ),
        ]

    # -- load and faults --------------------------------------------------------------
    def traffic(self, g: Grade, segment: str, duration_s: float) -> LoadPlan:
        """Batches at the graded rate, 1..500 events, some repeating event_ids of their own;
        a share resends any earlier batch of the grade whole, a share overlaps one. The steady
        run's batches give the events per second it carries."""
        rate = self.spec.grading.rate
        total = math.ceil(rate * duration_s)
        mine: list[Batch] = []
        for i in range(total):
            r = g.rng.random()
            before = len(self.batches) + i
            origin = None
            if before >= 4:
                k = g.rng.randrange(before)  # any earlier batch: gaps up to the whole grade
                origin = self.batches[k] if k < len(self.batches) else mine[k - len(self.batches)]
            if i == 2:  # the contract's largest batch, with repeats inside
                events = self.fresh_batch(g, MAX_BATCH)
                origin = None
            elif origin is not None and r < RESEND_SHARE:
                events = origin.events
            elif origin is not None and r < RESEND_SHARE + OVERLAP_SHARE:
                kept = g.rng.sample(origin.events, len(origin.events) // 2)
                extra = self.fresh_batch(g, g.rng.randint(5, 40))
                events = (*kept, *extra)
            else:
                events = self.fresh_batch(g, self.batch_size(g))
                origin = None
            mine.append(Batch(f"{segment}-{i}", events, origin.key if origin else None))
        self.batches += mine
        if segment == "steady":
            self.carried(g, mine)
        requests = [Request("POST", "/v1/events", b.body(), JSON_HEADERS, tag=b.key) for b in mine]

        def classify(_req: Request, resp: Response) -> str | None:
            return None if resp.status == 202 else f"http_{resp.status}"

        def on_result(
            _i: int,
            req: Request,
            resp: Response | None,
            kind: str | None,
            sched_s: float,
            done_s: float,
        ) -> None:
            self.sent_at.setdefault(req.tag, time.monotonic() - (done_s - sched_s))
            if resp is not None and kind is None:
                self.accepted.add(req.tag)

        return LoadPlan(
            rate=rate,
            duration_s=duration_s,
            make_request=requests.__getitem__,
            classify=classify,
            on_result=on_result,
        )

    async def markers(self, g: Grade, duration_s: float) -> None:
        """One-event batches on a site of their own; how long until stats show each."""
        site = f"marker-{self.nonce}"
        ts = self.base + 2 * SPAN_S
        t0 = time.monotonic()
        for k in range(int(duration_s / MARKER_EVERY_S)):
            await asyncio.sleep(max(0.0, t0 + k * MARKER_EVERY_S - time.monotonic()))
            ex = await self.post(g, [Ev(f"{site}-{k}", site, "/m", ts + k)])
            if ex.status != 202:
                continue
            _, took = await self.until(g, site, ts + k, ts + k + 1, 1, FRESHNESS_LIMIT_S * 2)
            self.freshness.append(FRESHNESS_LIMIT_S * 2 if took is None else took)

    def carried(self, g: Grade, batches: list[Batch]) -> None:
        """What the steady run carries: batches and events per second."""
        rate = self.spec.grading.rate
        g.metric("load.batches_per_s", rate)
        g.metric(
            "load.events_per_s",
            round(rate * sum(len(b.events) for b in batches) / max(1, len(batches)), 1),
        )

    async def alongside(self, g: Grade, segment: str, duration_s: float) -> None:
        """Markers beside the steady run, then how fresh the counts were."""
        if segment == "steady":
            await self.markers(g, duration_s)
            self.judge_freshness(g)

    def faulted(self, g: Grade, result: LoadResult, windows: list[FaultWindow]) -> None:
        """The batches refused while each store was paused, then the standard checks."""
        g.metric("faults.errors", sum(w.errors_during for w in windows))
        for w in windows:  # refused while each store was paused: whose request path it is on
            g.metric(f"faults.errors.{w.resource}", w.errors_during)
        super().faulted(g, result, windows)

    def judge_freshness(self, g: Grade) -> None:
        """``stats.freshness``: how long the markers took to show in stats, p95 in the limit."""
        p50, p95 = percentile(self.freshness, 50), percentile(self.freshness, 95)
        g.metric("stats.freshness_p50_s", None if p50 is None else round(p50, 3))
        g.metric("stats.freshness_p95_s", None if p95 is None else round(p95, 3))
        g.check(
            "stats.freshness",
            f"Events show in stats within {FRESHNESS_LIMIT_S:g} s of their 202 (p95), under load",
            p95 is not None and p95 <= FRESHNESS_LIMIT_S,
            detail="no marker was accepted"
            if p95 is None
            else f"{len(self.freshness)} markers: p50 {p50:.3f} s, p95 {p95:.3f} s",
            expected=f"p95 <= {FRESHNESS_LIMIT_S:g} s",
            actual=None if p95 is None else f"{p95:.3f} s",
        )

    # -- verification -----------------------------------------------------------------
    async def resend_late(self, g: Grade) -> None:
        """Resend a seeded share of the load's batches, whole or in part, after the fault
        run: a client's retry queue drains tens of seconds later, and must not count twice.
        Which batches is drawn from all of them, so the draw never depends on timing."""
        originals = [b for b in self.batches if b.origin is None]
        count = min(LATE_MAX, max(1, round(LATE_SHARE * len(originals))))
        late: list[Batch] = []
        for i, batch in enumerate(g.rng.sample(originals, min(count, len(originals)))):
            events = batch.events
            if g.rng.random() < 0.5 and len(events) > 1:
                events = tuple(g.rng.sample(events, g.rng.randint(1, len(events) - 1)))
            late.append(Batch(f"late-{i}", events, batch.key))
        self.batches += late
        slots = asyncio.Semaphore(4)

        async def send(batch: Batch) -> None:
            async with slots:
                self.sent_at.setdefault(batch.key, time.monotonic())
                ex = await self.post(g, batch.events)
                if ex.status == 202:
                    self.accepted.add(batch.key)

        await asyncio.gather(*(send(b) for b in late))

    def retry_metrics(self, g: Grade) -> None:
        """How the data covered the contract: retry gaps, batch sizes, repeats inside batches."""
        gaps = sorted(
            self.sent_at[b.key] - self.sent_at[b.origin]
            for b in self.batches
            if b.origin is not None and b.key in self.sent_at and b.origin in self.sent_at
        )
        g.metric("stats.retried_batches", len(gaps))
        g.metric("stats.retry_gap_p50_s", None if not gaps else round(percentile(gaps, 50), 2))
        g.metric("stats.retry_gap_max_s", None if not gaps else round(gaps[-1], 2))
        g.metric("stats.largest_batch", max((len(b.events) for b in self.batches), default=0))
        g.metric(
            "stats.repeats_in_batches",
            sum(len(b.events) - len({e.event_id for e in b.events}) for b in self.batches),
        )

    async def resend_failed(self, g: Grade) -> int:
        """Resend, like a client would, every batch that never got its 202; how many never did."""
        end = time.monotonic() + RESEND_BUDGET_S
        pending = [b for b in self.batches if b.key not in self.accepted]
        slots = asyncio.Semaphore(8)

        async def resend(batch: Batch) -> None:
            async with slots:
                while time.monotonic() < end:
                    ex = await self.post(g, batch.events)
                    if ex.status == 202:
                        self.accepted.add(batch.key)
                        return
                    await asyncio.sleep(0.2)

        await asyncio.gather(*(resend(b) for b in pending))
        g.metric("stats.batches_resent", len(pending))
        return sum(1 for b in self.batches if b.key not in self.accepted)

    def windows(self, g: Grade) -> list[tuple[str, int, int]]:
        out = []
        for site in self.sites:
            out.append((site, self.base, self.base + SPAN_S))
            for _ in range(SUBWINDOWS):
                start = self.base + g.rng.randrange(SPAN_S - 60)
                out.append((site, start, min(self.base + SPAN_S, start + g.rng.randrange(60, 900))))
        return out

    def bounds(self, wins: list[tuple[str, int, int]]) -> tuple[Counter[str], Counter[str]]:
        """Per counter, what must be counted (accepted events) and what may be (all sent)."""
        sent = {e.event_id: e for b in self.batches for e in b.events}
        acked = {e.event_id for b in self.batches if b.key in self.accepted for e in b.events}
        lo: Counter[str] = Counter()
        hi: Counter[str] = Counter()
        for site, start, end in wins:
            for e in sent.values():
                if e.site == site and start <= e.ts < end:
                    for key in (_key(site, start, end), _key(site, start, end, e.path)):
                        hi[key] += 1
                        lo[key] += e.event_id in acked
        return lo, hi

    async def read(
        self, g: Grade, wins: list[tuple[str, int, int]]
    ) -> tuple[dict[str, int], list[Exchange]]:
        actual: dict[str, int] = {}
        broken = []
        for site, start, end in wins:
            ex = await self.stats(g, site, start, end)
            data = json_body(ex)
            paths = paths_of(data)
            if ex.status != 200 or paths is None or not isinstance(data.get("total"), int):
                broken.append(ex)
                actual[_key(site, start, end)] = -1
                continue
            actual[_key(site, start, end)] = data["total"]
            for path, n in paths.items():
                actual[_key(site, start, end, path)] = n
        return actual, broken

    async def verify(self, g: Grade) -> None:
        await self.resend_late(g)
        unknown = await self.resend_failed(g)
        self.retry_metrics(g)
        wins = self.windows(g)
        lo, hi = self.bounds(wins)

        async def compared() -> tuple[CheckResult, list[Exchange]]:
            actual, broken = await self.read(g, wins)
            expected = {k: min(max(actual.get(k, 0), lo[k]), hi[k]) for k in hi}
            return counter_exactness(expected, actual), broken

        # counts may settle after the last 202 (a queue, a batch flush)
        (found, broken), _ = await poll_until(
            compared, lambda r: r[0].valid is True, limit_s=CONVERGE_S, every_s=0.5
        )
        errors: dict[str, int] = found.counts.get("errors", {})
        whole = {_key(s, a, b) for s, a, b in wins if (a, b) == (self.base, self.base + SPAN_S)}
        # events over- or under-counted over each site's whole hour, counted per path
        miscounted = sum(
            abs(v) for k, v in errors.items() if k not in whole and _window_of(k) in whole
        )
        g.metric("stats.events_sent", len({e.event_id for b in self.batches for e in b.events}))
        g.metric("stats.miscounted", miscounted)
        g.metric("stats.batches_never_accepted", unknown)
        g.metric("stats.counters_wrong", int(found.counts.get("miscounted", 0)))
        g.metric("stats.counters_checked", len(hi))
        over = sum(1 for v in errors.values() if v > 0)
        examples = [a["message"] for a in found.anomalies[:EXAMPLES]]
        # A valid batch still refused once the stores are back is lost, whatever it counted.
        ok = found.valid is True and not broken and not unknown
        g.check(
            "stats.exact",
            "Stats match what was sent exactly (retries not double counted, nothing lost)",
            ok,
            detail=(
                f"{len(errors)} of {len(hi)} counters wrong over {len(wins)} windows "
                f"({over} too high: double counts; {len(errors) - over} too low: lost events); "
                f"{miscounted} events miscounted over the sites' whole hour"
                if errors
                else f"{len(hi)} counters over {len(wins)} windows exact"
            )
            + (f"; {len(broken)} stats queries failed" if broken else "")
            + (
                f"; {unknown} valid batches were never accepted, resent for "
                f"{RESEND_BUDGET_S:g} s after the load: refused like lost"
                if unknown
                else ""
            )
            + (
                f"; retries came {g.report.metrics['stats.retry_gap_p50_s']} s (p50) to "
                f"{g.report.metrics['stats.retry_gap_max_s']} s after the first copy"
                if g.report.metrics.get("stats.retry_gap_max_s") is not None
                else ""
            ),
            exchange=broken[0] if broken else None,
            expected="every counter between the accepted and the sent distinct events",
            evidence={"examples": examples} if examples else None,
        )


def _key(site: str, start: int, end: int, path: str | None = None) -> str:
    return f"{site} [{start},{end}) {path if path is not None else 'total'}"


def _window_of(key: str) -> str:
    """The total's key of the window a path counter belongs to."""
    return key.rsplit(" ", 1)[0] + " total"
