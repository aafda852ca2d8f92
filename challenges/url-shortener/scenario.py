"""Grades a URL shortener on URLs from the contract's whole domain: the contract, Zipf-distributed
redirects under load while hot links change, a Redis outage, whether any redirect answered a
target already replaced, and every created link redirecting to its own URL, byte for byte."""

from __future__ import annotations

import asyncio
import os
import random
import re
import secrets
import string
import time
from collections import Counter
from collections.abc import Awaitable, Sequence
from typing import Any, NamedTuple
from urllib.parse import unquote

import numpy as np

from challenges.schema import ChallengeSpec
from grading import fingerprint, json_object, races
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
# The contract's URLs: RFC 3986, ASCII, at most MAX_URL characters; every part a service might
# normalise is drawn: scheme and host case, IDN hosts in punycode, IP literals, userinfo, ports,
# dot and empty segments, sub-delimiters, percent-escapes of any byte in either hex case.
MAX_URL = 2048
SCHEMES = ("https", "https", "https", "http", "http", "HTTPS", "hTTp")  # case-insensitive
HOSTS = ("example.com", "Example.COM", "sub.example.co.uk", "a-b.example.net", "127.0.0.1",
         "[2001:db8::7]", "xn--bcher-kva.example", "xn--fsqu00a.xn--0zwm56d")  # fmt: skip
PCHAR = string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@"  # a path segment's characters


def draw_url(rng: random.Random, tag: str, *, full: bool = False) -> str:
    """An absolute URL from the contract's whole domain, unique by ``tag`` (a path segment);
    its length is drawn too: mostly short, some long, a few exactly :data:`MAX_URL`. With
    ``full``, every optional part (userinfo, port, dot segments, query, fragment) is there."""

    def some(p: float) -> bool:
        return full or rng.random() < p

    def chars(alphabet: str, n: int) -> str:
        out: list[str] = []
        while len(out) < n:  # an escape counts three characters: two more placeholders
            if n - len(out) >= 3 and rng.random() < 0.15:
                out += [f"%{rng.randrange(256):02{rng.choice('Xx')}}", "", ""]
            else:
                out.append(rng.choice(alphabet))
        return "".join(out)

    roll = rng.random()
    length = MAX_URL if roll < 0.03 else rng.randint(161, MAX_URL) if roll < 0.25 else 0
    url = rng.choice(SCHEMES) + "://"
    url += chars(PCHAR.replace("@", ""), rng.randint(1, 12)) + "@" if some(0.05) else ""
    url += rng.choice(HOSTS) + (f":{rng.randint(1, 65535)}" if some(0.1) else "")
    url += f"/{tag}" + (rng.choice(("/./", "/../", "//")) if some(0.2) else "")
    tails = {"/": PCHAR + "/", "?": PCHAR + "/?", "#": PCHAR + "/?"}  # path, query, fragment
    parts = ["/", *(["?"] if some(0.4) else []), *(["#"] if some(0.2) else [])]
    room = max(length - len(url), rng.randint(20, 160)) - len(parts)
    cuts = sorted(rng.randint(0, room) for _ in parts[1:])
    sizes = [b - a for a, b in zip([0, *cuts], [*cuts, room], strict=True)]
    return url + "".join(p + chars(tails[p], n) for p, n in zip(parts, sizes, strict=True))


def how_altered(targets: set[str | None], got: str) -> str:
    """How a redirect's ``got`` differs from the nearest URL it may answer (None: a 404)."""
    urls = sorted(t for t in targets if t)
    if not urls:
        return "where a 404 was due"
    want = max(urls, key=lambda t: len(os.path.commonprefix([t, got])))
    if want.startswith(got):
        return f"cut to {len(got)} of its {len(want)} characters"
    if got.lower() == want.lower():
        return "the same but for letter case"
    if unquote(got) == unquote(want):
        return "the same but for percent-escapes"
    at = len(os.path.commonprefix([want, got]))
    return f"differs from character {at + 1} on ({want[at : at + 12]!r} → {got[at : at + 12]!r})"


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
    code: str
    url: str | None  # the PUT's new target; None: a delete


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
        self.drawn = 0  # URLs drawn so far: each one's tag is unique
        self.history = History()
        self.created: str | None = None  # the contract's link, deleted by its lifecycle
        self.links: list[tuple[str, str]] = []  # (code, URL) as created, by popularity rank
        self.refused: list[Exchange] = []  # creates of those links that got no code
        self.targets: dict[str, set[str]] = {}  # code -> every URL it was created or put with
        self.deleted: set[str] = set()  # codes whose deletion a load run scheduled
        self.schedules: dict[str, list[Write]] = {}  # segment -> its writes, drawn with its plan
        self.fault_run_start_s: float | None = None
        self.race_flights: list[tuple[float, int]] = []  # (write's flight s, reads during it)

    @property
    def codes(self) -> list[str]:
        """The created links' codes, by popularity rank (0 = most popular)."""
        return [code for code, _ in self.links]

    def url(self, g: Grade, *, full: bool = False) -> str:
        """A fresh URL of the contract's domain (:func:`draw_url`), drawn from the grade's seed."""
        self.drawn += 1
        return draw_url(g.rng, f"{self.nonce}-{self.drawn}", full=full)

    # -- contract -------------------------------------------------------------------------
    async def cases(self, g: Grade) -> None:
        target = self.url(g, full=True)
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
            detail="" if got in (None, target) else f"Location {how_altered({target}, got)}",
            exchange=ex,
            expected=f"302 Location: {target}",
            actual=f"{ex.status} Location: {got}",
        )

        new = self.url(g, full=True)
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
        """Create LINKS links, each kept with the URL its own create sent (a refused create
        is kept as refused); the hot ones are the first writes of the history."""
        urls = [self.url(g) for _ in range(LINKS)]
        t_before = self.history.now()
        exchanges = await g.burst([("POST", "/v1/links", {"json": {"url": u}}) for u in urls])
        t_after = self.history.now()
        for url, ex in zip(urls, exchanges, strict=True):
            code = code_of(ex) if ex.status == 201 else None
            if code is None:
                self.refused.append(ex)
                continue
            if len(self.links) < HOT:
                op = self.history.invoke("setup", "write", code, url, invoked_s=t_before)
                self.history.complete(op, "ok", completed_s=t_after)
            self.links.append((code, url))
            self.targets.setdefault(code, set()).add(url)

    def traffic(self, g: Grade, segment: str, duration_s: float) -> LoadPlan:
        """Redirects at the graded rate; link ``k`` (by rank) is read with weight 1/k^s.

        The segment's writes are drawn first (:meth:`alongside` makes them). Each answer is
        judged by the contract, not by its status alone: a ``302`` must carry a ``Location``
        that is, byte for byte, one of the URLs its code was ever given, and a ``404`` is right
        only for a link whose deletion was scheduled.
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
        requests = [Request("GET", f"/{code}", tag=code) for code in self.codes]

        def make(i: int) -> Request:
            return requests[picks[i % total]]

        def classify(req: Request, resp: Response) -> str | None:
            if resp.status == 302:
                target = resp.headers.get("location")
                if target is None:
                    return "302_without_location"
                return None if target in self.targets[req.tag] else "wrong_location"
            if resp.status == 404:
                return None if req.tag in self.deleted else "404_for_a_live_link"
            return f"http_{resp.status}"

        return LoadPlan(rate=rate, duration_s=duration_s, make_request=make, classify=classify)

    def writes(self, g: Grade, duration_s: float) -> list[Write]:
        """A seeded schedule: updates of hot links all along (each to a fresh URL, which the
        load's answers may then carry), a few deletes late in the run."""
        hot = self.codes[:HOT]
        out: list[Write] = []
        candidates = [c for c in hot[len(hot) // 2 :] if c not in self.deleted]
        for _ in range(min(DELETES_PER_RUN, len(candidates))):
            code = candidates.pop(g.rng.randrange(len(candidates)))
            self.deleted.add(code)
            out.append(Write(g.rng.uniform(0.5, 0.8) * duration_s, code, None))
        alive = [c for c in hot if c not in self.deleted]
        t = WRITE_EVERY_S
        while t < duration_s - 0.5:
            code, url = g.rng.choice(alive), self.url(g)
            self.targets[code].add(url)
            out.append(Write(t + g.rng.uniform(0, 0.05), code, url))
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
            code = w.code
            await self.probe(g, code)  # the link is cached now, if the design caches
            if w.url is None:
                op = self.history.invoke("writer", "delete", code)
                call = g.request("DELETE", f"/v1/links/{code}")
                want = 204
            else:
                op = self.history.invoke("writer", "write", code, w.url)
                call = g.request("PUT", f"/v1/links/{code}", json={"url": w.url})
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

    def race_search(self) -> races.RaceSearch:
        """What the probed writes add up to, one trial each: a read/invalidate race
        RACE_WINDOW_MS wide, at a random point of a write's flight, is hit by one of its
        in-flight reads with chance ``reads · window / flight`` (each read covers about one
        window's width); :class:`grading.races.RaceSearch` multiplies the misses."""
        found = races.RaceSearch(window_s=RACE_WINDOW_MS / 1000)
        found.add([min(1.0, n * found.window_s / f) for f, n in self.race_flights if f > 0])
        return found

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
        hot = self.codes[:HOT]
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
        g.metric("links.created", len(self.links))
        g.metric("links.refused", len(self.refused))
        if len(self.links) < 2 * HOT:
            judged = [f"load.{name}" for name in self.spec.thresholds]
            for check_id in (*judged, *self.fault_checks()):
                g.check(
                    check_id,
                    "Load with changing links",
                    Status.ERROR,
                    detail=f"only {len(self.links)} of {LINKS} links could be created; "
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
        404): the URL its own create sent or its last acknowledged write's, plus the targets
        of writes whose outcome is unknown since."""
        ops = [op for op in self.history.filter(kind=("write", "delete")) if op.process == "writer"]
        ops.sort(key=lambda op: op.invoked_s)
        expected: list[set[str | None]] = []
        for code, url in self.links:
            now: set[str | None] = {url}
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
        to its own target, byte for byte, after the load — a code handed out twice (a
        collision that overwrote an older link), a target lost or altered shows here. A
        create of a valid URL that got no code counts as a link lost: the contract accepts
        every one."""
        expected = self.expected_targets()
        codes = list(dict.fromkeys(self.codes))
        exchanges = dict(
            zip(codes, await g.burst([("GET", f"/{code}", {}) for code in codes]), strict=True)
        )
        wrong: list[tuple[Exchange, set[str | None]]] = []
        for (code, _), want in zip(self.links, expected, strict=True):
            ex = exchanges[code]
            got = location(ex) if ex.status == 302 else None if ex.status == 404 else "?"
            if got not in want:
                wrong.append((ex, want))
        sent = set().union(*self.targets.values())
        altered = [(ex, w) for ex, w in wrong if ex.status == 302 and location(ex) not in sent]
        reused = len(self.links) - len(codes)
        g.metric("links.verified", len(self.links))
        g.metric("links.wrong", len(wrong))
        g.metric("links.altered", len(altered))
        g.metric("links.codes_reused", reused)
        facts = [
            f"{len(wrong)} of the {len(self.links)} links created by the grader do not "
            "redirect to their own target"
        ]
        if self.refused:
            how = Counter("no answer" if ex.error else f"{ex.status}" for ex in self.refused)
            facts.insert(
                0,
                f"{len(self.refused)} of {LINKS} creates of a valid URL got no code ("
                + ", ".join(f"{k} ×{n}" for k, n in how.most_common())
                + "); the contract answers 201 to each, so each counts as a link lost",
            )
        if reused:
            facts.append(f"{reused} codes were handed out for two different URLs")
        if altered:
            ex, want = altered[0]
            facts.append(
                f"{len(altered)} redirected to a URL the grader never sent; the first, "
                f"{how_altered(want, location(ex) or '')}"
            )
        first = wrong[0] if wrong else None
        g.check(
            "links.resolve",
            "Every created link redirects to its own target",
            not wrong and not self.refused,
            detail="; ".join(facts),
            exchange=first[0] if first else self.refused[0] if self.refused else None,
            expected=(
                "302 to " + " or ".join(sorted(t or "404" for t in first[1]))
                if first
                else '201 {"code": "..."}'
                if self.refused
                else None
            ),
            actual=(
                f"{first[0].status} {location(first[0]) or first[0].text(120)}" if first else None
            ),
        )

    async def verify(self, g: Grade) -> None:
        if self.links or self.refused:
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
        race = self.race_search()
        detection = round(1 - race.miss, 4)
        g.metric("cache.race_writes_probed", len(self.race_flights))
        g.metric("cache.race_detection", detection)
        g.metric("cache.fresh.miss_probability", race.miss_metric)
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
                f"{detection:.4f} (missed with {race.miss:.2g}, over {race.trials} writes)."
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
