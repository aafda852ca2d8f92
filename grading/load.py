"""Open-model load generation: requests leave on schedule whether or not earlier ones returned.

One scheduler coroutine sleeps until the next due time and dispatches every due request
in a batch. Each request goes out on a keep-alive HTTP/1.1 connection to the pinned
:attr:`Target.ip` (a hand-written :class:`asyncio.Protocol` with httptools' parser; one
request in flight per connection; connections opened lazily up to a pool size). Latency
is measured from the *scheduled* send time (corrected for coordinated omission) and from
the actual send (raw). When every connection is busy, or ``max_in_flight`` requests are
outstanding, due requests wait — still timed from their schedule — and time out
``timeout_s`` after it. Nothing waits unbounded: a run ends at most ``timeout_s`` after
its duration, leftovers counted as timeouts.

Per-request results go into flat arrays indexed by request number (no per-request
objects); histograms and the timeline are built from them when the run ends.
"""

from __future__ import annotations

import asyncio
import math
import ssl
import time
from array import array
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httptools
import numpy as np
from hdrh.histogram import HdrHistogram
from rich.table import Table

from grading.timeline import Bucket, Timeline
from grading.urlguard import Policy, Target, resolve_target

BODY_CAP = 64 * 1024
MAX_REQUESTS = 20_000_000
HIST_MAX_US = 3_600_000_000
SWEEP_S = 0.01  # how often timeouts are checked
EARLY_S = 0.0005  # event-loop timers tick in whole ms: a request may leave this much early
TICK_S = 0.5
LAG_LIMIT_MS = 5.0
SEND_RATE_FLOOR = 0.97
USER_AGENT = "cruscible-load/0.1"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    tag: str = ""


@dataclass
class Response:
    status: int
    body: bytes  # at most BODY_CAP bytes
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names; last one wins


Classifier = Callable[[Request, Response], "str | None"]
OnResult = Callable[[int, Request, "Response | None", "str | None", float, float], None]


def default_classify(_request: Request, response: Response) -> str | None:
    """5xx → ``http_5xx``, 4xx → ``http_4xx``, anything else is OK."""
    if response.status >= 500:
        return "http_5xx"
    if response.status >= 400:
        return "http_4xx"
    return None


@dataclass
class LoadPlan:
    """What to send: ``rate`` req/s (ramping linearly to ``ramp_to``) for ``duration_s``."""

    rate: float
    duration_s: float
    make_request: Callable[[int], Request]
    ramp_to: float | None = None
    timeout_s: float = 2.0
    max_in_flight: int = 1024
    connections: int = 64
    classify: Classifier | None = None
    on_result: OnResult | None = None
    bucket_s: float = 0.25

    def __post_init__(self) -> None:
        end = self.rate if self.ramp_to is None else self.ramp_to
        if self.rate < 0 or end < 0 or max(self.rate, end) <= 0:
            raise ValueError("the rate must be positive (a ramp may start or end at 0)")
        if self.duration_s <= 0 or self.timeout_s <= 0 or self.bucket_s <= 0:
            raise ValueError("duration_s, timeout_s and bucket_s must be positive")
        if self.max_in_flight < 1 or self.connections < 1:
            raise ValueError("max_in_flight and connections must be at least 1")
        if self.total > MAX_REQUESTS:
            raise ValueError(f"{self.total:,} requests planned; at most {MAX_REQUESTS:,} per run")

    @property
    def _slope(self) -> float:
        return 0.0 if self.ramp_to is None else (self.ramp_to - self.rate) / self.duration_s

    @property
    def total(self) -> int:
        """How many requests fall inside the duration."""
        end = self.rate if self.ramp_to is None else self.ramp_to
        return max(0, math.ceil((self.rate + end) / 2 * self.duration_s - 1e-9))

    @property
    def mean_rate(self) -> float:
        return self.total / self.duration_s

    def due_s(self, i: int) -> float:
        """When request ``i`` is due, in seconds since the start (inverse of the ramp)."""
        k = self._slope
        if k == 0.0:
            return i / self.rate
        denom = self.rate + math.sqrt(max(0.0, self.rate * self.rate + 2 * k * i))
        return 2 * i / denom if denom > 0 else 0.0

    def due_array(self, n: int) -> np.ndarray:
        i = np.arange(n, dtype=np.float64)
        k = self._slope
        if k == 0.0:
            return i / self.rate
        denom = self.rate + np.sqrt(np.maximum(0.0, self.rate**2 + 2 * k * i))
        return np.divide(2 * i, denom, out=np.zeros_like(i), where=denom > 0)


def encode_request(req: Request, target: Target) -> bytes:
    """The request as HTTP/1.1 bytes, with Host, User-Agent and Content-Length filled in.

    ``req.path`` is relative to the target's base path; an empty one is the target's URL
    itself (``cruscible load http://host/healthz``)."""
    path = target.base_path + req.path if req.path else target.base_path or "/"
    parts = [req.method, path, *(x for h in req.headers for x in h)]
    if any(c in p for p in parts for c in "\r\n") or " " in req.method + path:
        raise ValueError(f"request line or headers contain whitespace or CR/LF: {req!r}")
    names = {n.lower() for n, _ in req.headers}
    lines = [f"{req.method} {path} HTTP/1.1"]
    if "host" not in names:
        lines.append(f"Host: {target.host_header}")
    if "user-agent" not in names:
        lines.append(f"User-Agent: {USER_AGENT}")
    lines += [f"{n}: {v}" for n, v in req.headers]
    if "content-length" not in names and (req.body or req.method in ("POST", "PUT", "PATCH")):
        lines.append(f"Content-Length: {len(req.body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + req.body


# A request on its way: (index, request, encoded bytes, scheduled monotonic time).
_Item = tuple[int, Request, bytes, float]


class _Conn(asyncio.Protocol):
    """One keep-alive connection carrying at most one request at a time."""

    def __init__(self, run: _Run) -> None:
        self.run = run
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.active: _Item | None = None
        self.sent_at = 0.0
        self.body: list[bytes] = []
        self.body_len = 0
        self.headers: dict[str, str] = {}
        self.framed = False  # Content-Length or Transfer-Encoding seen
        self.headers_done = False
        self.closed = False

    def send(self, item: _Item) -> None:
        self.active = item
        self.body = []
        self.body_len = 0
        self.headers = {}
        self.framed = self.headers_done = False
        self.sent_at = time.monotonic()
        assert self.transport is not None
        self.transport.write(item[2])

    # -- asyncio callbacks ------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.active is None:
            self.run.drop(self)  # unsolicited bytes: the connection is not usable
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.run.fail(self, "bad_response")

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.active is not None:
            if self.headers_done and not self.framed:  # body delimited by the close
                self.run.complete(self, self.parser.get_status_code(), False)
            else:
                self.run.fail(self, "reset")
        self.run.drop(self)

    # -- httptools callbacks ------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        n = name.lower()
        if n == b"content-length" or n == b"transfer-encoding":
            self.framed = True
        if self.run.want_body:
            self.headers[n.decode("latin-1")] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.headers_done = True
        if self.active is not None and self.active[1].method == "HEAD":
            # no body follows, but the parser cannot be told: answer now, then drop the connection
            self.run.complete(self, self.parser.get_status_code(), False)

    def on_body(self, body: bytes) -> None:
        if self.run.want_body and self.body_len < BODY_CAP:
            self.body.append(body)
            self.body_len += len(body)

    def on_message_complete(self) -> None:
        if self.active is not None:
            parser = self.parser
            self.run.complete(self, parser.get_status_code(), parser.should_keep_alive())


class _Run:
    """The state of one load run; every method runs on the event loop's thread."""

    def __init__(self, target: Target, plan: LoadPlan, t0: float) -> None:
        self.target = target
        self.plan = plan
        self.t0 = t0
        self.loop = asyncio.get_running_loop()
        self.timeout = plan.timeout_s
        self.classify = plan.classify
        self.on_result = plan.on_result
        self.want_body = plan.classify is not None or plan.on_result is not None
        self.max_conns = min(plan.connections, plan.max_in_flight)
        n = plan.total
        self.corrected = array("f", bytes(4 * n))  # µs from schedule to done
        self.raw = array("f", bytes(4 * n))  # µs from send to done; -1 if never sent
        self.lag = array("f", bytes(4 * n))  # µs the dispatch ran late; -1 if held back
        self.status = array("H", bytes(2 * n))
        self.kind = array("H", bytes(2 * n))  # 0 = OK, else 1 + index in self.kinds
        self.kinds: list[str] = []
        self.kind_codes: dict[str, int] = {}
        self.idle: list[_Conn] = []
        self.conns: set[_Conn] = set()
        self.open = 0  # connected or connecting
        self.connecting = 0
        self.queue: deque[_Item] = deque()
        self.outstanding = 0
        self.sent = 0
        self.issued_on_time = 0
        self.held_back = 0
        self.blocked = False
        self.wake: asyncio.Future[None] | None = None
        self.connect_tasks: set[asyncio.Task[None]] = set()
        self.callback_error: BaseException | None = None
        self.ssl: ssl.SSLContext | None = None
        self.server_hostname: str | None = None
        if target.scheme == "https":
            self.ssl = ssl.create_default_context()
            self.server_hostname = target.host

    # -- bookkeeping ----------------------------------------------------------------------
    def code(self, kind: str | None) -> int:
        if kind is None:
            return 0
        code = self.kind_codes.get(kind)
        if code is None:
            self.kinds.append(kind)
            code = self.kind_codes[kind] = len(self.kinds)
        return code

    def finish(
        self,
        item: _Item,
        kind: str | None,
        sent_at: float,
        response: Response | None,
    ) -> None:
        done = time.monotonic()
        i, req, _, sched = item
        self.corrected[i] = (done - sched) * 1e6
        self.raw[i] = (done - sent_at) * 1e6 if sent_at else -1.0
        self.kind[i] = self.code(kind)
        if response is not None:
            self.status[i] = response.status
        self.outstanding -= 1
        if self.on_result is not None:
            try:
                self.on_result(i, req, response, kind, sched - self.t0, done - self.t0)
            except Exception as exc:  # surfaced when the run ends
                self.callback_error = self.callback_error or exc
        if self.blocked and self.wake is not None and not self.wake.done():
            self.wake.set_result(None)

    # -- connections ------------------------------------------------------------------
    def complete(self, conn: _Conn, status: int, keep_alive: bool) -> None:
        item = conn.active
        assert item is not None
        conn.active = None
        if self.want_body:
            response = Response(status, b"".join(conn.body)[:BODY_CAP], conn.headers)
            try:
                kind = (self.classify or default_classify)(item[1], response)
            except Exception as exc:
                self.callback_error = self.callback_error or exc
                kind = "classifier_error"
        else:
            response = Response(status, b"")
            kind = None if status < 400 else ("http_5xx" if status >= 500 else "http_4xx")
        self.finish(item, kind, conn.sent_at, response)
        if keep_alive and not conn.closed:
            self.release(conn)
        else:
            self.drop(conn)

    def fail(self, conn: _Conn, kind: str) -> None:
        item = conn.active
        if item is not None:
            conn.active = None
            self.finish(item, kind, conn.sent_at, None)
        self.drop(conn)

    def drop(self, conn: _Conn) -> None:
        if conn.closed:
            return
        conn.closed = True
        self.open -= 1
        self.conns.discard(conn)
        if conn.transport is not None:
            conn.transport.abort()
        self.pump()

    def release(self, conn: _Conn) -> None:
        """Give a free connection the oldest waiting request, or park it."""
        queue = self.queue
        while queue:
            item = queue.popleft()
            if time.monotonic() >= item[3] + self.timeout:
                self.finish(item, "timeout", 0.0, None)
                continue
            self.sent += 1
            conn.send(item)
            return
        self.idle.append(conn)

    def pump(self) -> None:
        """Open connections while requests wait and the pool has room."""
        while len(self.queue) > self.connecting and self.open < self.max_conns:
            self.open += 1
            self.connecting += 1
            task = self.loop.create_task(self.connect())
            self.connect_tasks.add(task)
            task.add_done_callback(self.connect_tasks.discard)

    async def connect(self) -> None:
        conn = _Conn(self)
        try:
            async with asyncio.timeout(self.timeout):
                await self.loop.create_connection(
                    lambda: conn,
                    self.target.ip,
                    self.target.port,
                    ssl=self.ssl,
                    server_hostname=self.server_hostname,
                )
        except (OSError, TimeoutError):
            self.connecting -= 1
            self.open -= 1
            if self.queue:
                self.finish(self.queue.popleft(), "connect", 0.0, None)
            self.pump()
            return
        self.connecting -= 1
        if conn.closed:  # closed by the server before we could use it
            self.pump()
            return
        self.conns.add(conn)
        self.release(conn)

    # -- scheduling -------------------------------------------------------------------
    def dispatch(self, i: int, sched: float, now: float, req: Request, data: bytes) -> None:
        self.outstanding += 1
        item = (i, req, data, min(sched, now))  # latency counts from the earlier of the two
        if now >= sched + self.timeout:
            self.finish(item, "timeout", 0.0, None)
            return
        idle = self.idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                self.sent += 1
                conn.send(item)
                return
        self.queue.append(item)
        self.pump()

    def sweep(self, now: float) -> None:
        """Time out requests past their deadline (scheduled time + timeout)."""
        limit = now - self.timeout
        queue = self.queue
        while queue and queue[0][3] <= limit:
            self.finish(queue.popleft(), "timeout", 0.0, None)
        for conn in [c for c in self.conns if c.active is not None and c.active[3] <= limit]:
            self.fail(conn, "timeout")

    async def nap(self, delay: float) -> None:
        """Sleep ``delay`` seconds, or less if a completion frees an in-flight slot."""
        fut = self.loop.create_future()
        self.wake = fut
        handle = self.loop.call_later(delay, _resolve, fut)
        try:
            await fut
        finally:
            handle.cancel()
            self.wake = None

    async def schedule(
        self, stop: asyncio.Event | None, on_tick: Callable[[float], None] | None
    ) -> int:
        """Dispatch every request at its due time; return how many were scheduled."""
        plan, t0, n = self.plan, self.t0, self.plan.total
        duration = plan.duration_s
        constant = plan.ramp_to is None
        interval = 1.0 / plan.rate if constant else 0.0
        due_s = plan.due_s
        make = plan.make_request
        max_in_flight = plan.max_in_flight
        lag = self.lag
        monotonic = time.monotonic
        end = t0 + duration
        on_time_end = end + LAG_LIMIT_MS / 1000  # dispatched by then counts as on time
        hard_end = end + self.timeout + 1.0
        last_req: Request | None = None
        last_data = b""
        next_sweep = next_tick = t0
        held = False
        i = 0
        next_t = t0
        while i < n:
            now = monotonic()
            if (stop is not None and stop.is_set()) or now > hard_end:
                break
            while next_t <= now + EARLY_S:
                if self.outstanding >= max_in_flight:
                    self.blocked = held = True
                    break
                req = make(i)
                if req is not last_req:
                    last_data = encode_request(req, self.target)
                    last_req = req
                if held:
                    lag[i] = -1.0
                    self.held_back += 1
                else:
                    lag[i] = max(0.0, now - next_t) * 1e6
                    if now <= on_time_end:
                        self.issued_on_time += 1
                self.dispatch(i, next_t, now, req, last_data)
                i += 1
                if i >= n:
                    break
                next_t = t0 + (i * interval if constant else due_s(i))
            else:
                self.blocked = held = False
            if now >= next_sweep:
                self.sweep(now)
                next_sweep = now + SWEEP_S
            if on_tick is not None and now >= next_tick:
                on_tick(min(1.0, max(0.0, (now - t0) / duration)))
                next_tick = now + TICK_S
            if self.blocked:
                await (self.nap(SWEEP_S) if self.outstanding >= max_in_flight else asyncio.sleep(0))
            else:
                delay = next_t - monotonic()
                if delay > 0:
                    await self.nap(min(delay, SWEEP_S))
                else:
                    await asyncio.sleep(0)
        self.blocked = False
        return i

    async def drain(self, until: float) -> None:
        """Wait for outstanding requests until ``until``; whatever is left times out."""
        while self.outstanding > 0:
            now = time.monotonic()
            if now >= until:
                break
            self.sweep(now)
            await asyncio.sleep(min(SWEEP_S, until - now))
        while self.queue:
            self.finish(self.queue.popleft(), "timeout", 0.0, None)
        for conn in list(self.conns):
            self.fail(conn, "timeout")
        for task in list(self.connect_tasks):
            task.cancel()
        for conn in self.idle:
            self.drop(conn)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


@dataclass
class LoadResult:
    """What a load run measured. Times are seconds since the load started."""

    target_rate: float
    duration_s: float
    scheduled: int
    sent: int
    completed: int  # answered with an HTTP status (any status)
    ok: int
    errors: dict[str, int]
    statuses: dict[int, int]
    corrected: HdrHistogram
    raw: HdrHistogram
    timeline: Timeline
    achieved_rate: float
    max_lag_ms: float
    lag_p99_ms: float
    unreliable: bool
    unreliable_reason: str | None
    _due_s: np.ndarray = field(repr=False, compare=False, default_factory=lambda: np.zeros(0))
    _corrected_us: np.ndarray = field(
        repr=False, compare=False, default_factory=lambda: np.zeros(0, np.float32)
    )

    def percentile_ms(self, q: float, corrected: bool = True) -> float:
        """The ``q``-th percentile latency (0..100) in milliseconds; 0 when nothing finished."""
        hist = self.corrected if corrected else self.raw
        return hist.get_value_at_percentile(q) / 1000.0

    @property
    def error_rate(self) -> float:
        return sum(self.errors.values()) / self.scheduled if self.scheduled else 0.0

    def latencies_us(self, start_s: float = 0.0, end_s: float = math.inf) -> np.ndarray:
        """Corrected latencies (µs) of the requests scheduled in ``[start_s, end_s)``."""
        lo, hi = np.searchsorted(self._due_s, [start_s, end_s], side="left")
        return self._corrected_us[lo:hi]

    def to_dict(self) -> dict[str, Any]:
        def pcts(corrected: bool) -> dict[str, float]:
            hist = self.corrected if corrected else self.raw
            out = {
                f"p{q:g}": round(self.percentile_ms(q, corrected), 3) for q in (50, 90, 99, 99.9)
            }
            out["max"] = round(hist.get_max_value() / 1000.0, 3)
            return out

        return {
            "target_rate": round(self.target_rate, 2),
            "achieved_rate": round(self.achieved_rate, 2),
            "duration_s": round(self.duration_s, 3),
            "scheduled": self.scheduled,
            "sent": self.sent,
            "completed": self.completed,
            "ok": self.ok,
            "error_rate": round(self.error_rate, 6),
            "errors": dict(self.errors),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "latency_ms": {"corrected": pcts(True), "raw": pcts(False)},
            "lag_ms": {"p99": round(self.lag_p99_ms, 3), "max": round(self.max_lag_ms, 3)},
            "unreliable": self.unreliable,
            "unreliable_reason": self.unreliable_reason,
        }


def _histogram(values_us: np.ndarray) -> HdrHistogram:
    hist = HdrHistogram(1, HIST_MAX_US, 3)
    if values_us.size:
        clipped = np.clip(np.rint(values_us), 1, HIST_MAX_US).astype(np.int64)
        uniq, counts = np.unique(clipped, return_counts=True)
        for v, c in zip(uniq.tolist(), counts.tolist(), strict=True):
            hist.record_value(v, c)
    return hist


def _timeline(
    bucket_s: float,
    duration_s: float,
    due: np.ndarray,
    corrected_ms: np.ndarray,
    sent: np.ndarray,
    kind: np.ndarray,
    kinds: list[str],
) -> Timeline:
    n_buckets = max(1, math.ceil(duration_s / bucket_s - 1e-9))
    edges = np.searchsorted(due, np.arange(n_buckets + 1) * bucket_s, side="left")
    edges[-1] = due.size
    timeline = Timeline(bucket_s)
    for b in range(n_buckets):
        lo, hi = int(edges[b]), int(edges[b + 1])
        bucket = Bucket(t_s=round(b * bucket_s, 6), sent=int(sent[lo:hi].sum()))
        if hi > lo:
            counts = np.bincount(kind[lo:hi], minlength=len(kinds) + 1)
            bucket.ok = int(counts[0])
            bucket.errors = {kinds[c - 1]: int(counts[c]) for c in np.flatnonzero(counts[1:]) + 1}
            lat = corrected_ms[lo:hi]
            p50, p99 = np.percentile(lat, [50, 99], method="inverted_cdf")
            bucket.p50_ms, bucket.p99_ms = round(float(p50), 3), round(float(p99), 3)
            bucket.max_ms = round(float(lat.max()), 3)
        timeline.buckets.append(bucket)
    return timeline


def _result(run: _Run, scheduled: int, elapsed_s: float) -> LoadResult:
    plan = run.plan
    duration = (
        min(plan.duration_s, max(elapsed_s, 1e-9)) if scheduled < plan.total else plan.duration_s
    )
    due = plan.due_array(scheduled)
    corrected = np.frombuffer(run.corrected, np.float32)[:scheduled]
    raw = np.frombuffer(run.raw, np.float32)[:scheduled]
    kind = np.frombuffer(run.kind, np.uint16)[:scheduled].astype(np.int64)
    status = np.frombuffer(run.status, np.uint16)[:scheduled]
    lag = np.frombuffer(run.lag, np.float32)[:scheduled]
    counts = np.bincount(kind, minlength=len(run.kinds) + 1)
    errors = {run.kinds[c - 1]: int(counts[c]) for c in np.flatnonzero(counts[1:]) + 1}
    uniq, st_counts = np.unique(status[status > 0], return_counts=True)
    statuses = dict(zip(uniq.tolist(), st_counts.tolist(), strict=True))
    completed = int(np.count_nonzero(status))
    lag_ms = lag[lag >= 0] / 1000.0
    lag_p99 = float(np.percentile(lag_ms, 99)) if lag_ms.size else 0.0
    max_lag = float(lag_ms.max()) if lag_ms.size else 0.0
    target_rate = scheduled / duration
    reasons = []
    if lag_p99 > LAG_LIMIT_MS:
        reasons.append(
            f"the generator dispatched late: lag p99 {lag_p99:.1f} ms, max {max_lag:.1f} ms "
            f"(limit {LAG_LIMIT_MS:g} ms)"
        )
    expected = scheduled - run.held_back
    if expected > 0 and run.issued_on_time < SEND_RATE_FLOOR * expected:
        share = run.issued_on_time / expected
        reasons.append(
            f"the generator issued {run.issued_on_time / duration:,.0f} req/s of the "
            f"{expected / duration:,.0f} req/s due ({share:.1%}, {1 - share:.1%} short)"
        )
    return LoadResult(
        target_rate=target_rate,
        duration_s=duration,
        scheduled=scheduled,
        sent=run.sent,
        completed=completed,
        ok=int(counts[0]),
        errors=errors,
        statuses=statuses,
        corrected=_histogram(corrected),
        raw=_histogram(raw[raw >= 0]),
        timeline=_timeline(
            plan.bucket_s, duration, due, corrected / 1000.0, raw >= 0, kind, run.kinds
        ),
        achieved_rate=completed / duration,
        max_lag_ms=max_lag,
        lag_p99_ms=lag_p99,
        unreliable=bool(reasons),
        unreliable_reason="; ".join(reasons) or None,
        _due_s=due,
        _corrected_us=corrected,
    )


async def run_load(
    target: Target,
    plan: LoadPlan,
    *,
    stop: asyncio.Event | None = None,
    on_tick: Callable[[float], None] | None = None,
    start_at: float | None = None,
) -> LoadResult:
    """Run ``plan`` against ``target``; ``start_at`` is a ``time.monotonic()`` instant."""
    t0 = time.monotonic() if start_at is None else start_at
    if t0 > time.monotonic():
        await asyncio.sleep(t0 - time.monotonic())
    run = _Run(target, plan, t0)
    try:
        scheduled = await run.schedule(stop, on_tick)
        elapsed = time.monotonic() - t0
        await run.drain(max(time.monotonic(), t0 + plan.duration_s) + plan.timeout_s + SWEEP_S)
    finally:
        for conn in list(run.conns) + run.idle:
            run.drop(conn)
    if on_tick is not None:
        on_tick(1.0)
    if run.callback_error is not None:
        raise RuntimeError("a load plan callback failed") from run.callback_error
    return _result(run, scheduled, elapsed)


def run_load_sync(
    target: Target | str,
    plan: LoadPlan,
    *,
    policy: Policy | None = None,
    on_tick: Callable[[float], None] | None = None,
) -> LoadResult:
    """Run a load on a fresh uvloop event loop (for the CLI); a URL is vetted first."""
    import uvloop

    async def main() -> LoadResult:
        t = target
        if isinstance(t, str):
            t = await resolve_target(t, policy or Policy.from_env())
        return await run_load(t, plan, on_tick=on_tick)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main())


def plan_from_cli(
    method: str,
    path: str,
    body: str | None,
    headers: list[str] | tuple[str, ...],
    rate: float,
    duration: float,
) -> LoadPlan:
    """A constant-rate plan of one repeated request (``--body`` is JSON, ``--header K: V``)."""
    pairs = []
    for h in headers:
        name, sep, value = h.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"a header is 'Name: value', not {h!r}")
        pairs.append((name.strip(), value.strip()))
    data = b""
    if body is not None:
        import json

        try:
            json.loads(body)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--body is not valid JSON: {exc}") from None
        data = body.encode()
        if not any(n.lower() == "content-type" for n, _ in pairs):
            pairs.append(("Content-Type", "application/json"))
    if path and not path.startswith("/"):
        path = "/" + path
    request = Request(method.upper(), path, data, tuple(pairs))
    return LoadPlan(rate=rate, duration_s=duration, make_request=lambda _i: request)


def format_table(result: LoadResult) -> Table:
    """A rich table of rates, errors by kind and latency percentiles (corrected and raw)."""
    table = Table(title="Load result", show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("corrected", justify="right")
    table.add_column("raw", justify="right")
    table.add_row(
        "rate",
        f"{result.achieved_rate:,.1f}/s achieved",
        f"{result.target_rate:,.1f}/s target",
    )
    table.add_row("requests", f"{result.scheduled:,} scheduled", f"{result.sent:,} sent")
    table.add_row("ok", f"{result.ok:,}", f"{1 - result.error_rate:.2%}")
    for kind, count in sorted(result.errors.items(), key=lambda kv: -kv[1]):
        table.add_row(f"error: {kind}", f"{count:,}", f"{count / max(1, result.scheduled):.2%}")
    for q in (50, 90, 99, 99.9):
        table.add_row(
            f"p{q:g}",
            f"{result.percentile_ms(q):,.2f} ms",
            f"{result.percentile_ms(q, corrected=False):,.2f} ms",
        )
    table.add_row(
        "max",
        f"{result.corrected.get_max_value() / 1000:,.2f} ms",
        f"{result.raw.get_max_value() / 1000:,.2f} ms",
    )
    table.add_row(
        "generator lag", f"p99 {result.lag_p99_ms:.2f} ms", f"max {result.max_lag_ms:.2f} ms"
    )
    if result.unreliable:
        table.caption = f"[yellow]unreliable: {result.unreliable_reason}[/yellow]"
    return table
