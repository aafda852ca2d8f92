"""The open-model scheduler: requests leave on schedule whether or not earlier ones returned
(see the package docstring), on a pool of :class:`~grading.load.wire.Conn` connections."""

from __future__ import annotations

import asyncio
import ssl
import time
from array import array
from collections import deque
from collections.abc import Callable

from grading.load.plan import LoadPlan, Request, Response, default_classify
from grading.load.result import LAG_LIMIT_MS, LoadResult, build_result
from grading.load.wire import BODY_CAP, Conn, Item, encode_request
from grading.urlguard import Policy, Target, resolve_target

SWEEP_S = 0.01  # how often timeouts are checked
EARLY_S = 0.0005  # event-loop timers tick in whole ms: a request may leave this much early
TICK_S = 0.5


class Run:
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
        self.idle: list[Conn] = []
        self.conns: set[Conn] = set()
        self.open = 0  # connected or connecting
        self.connecting = 0
        self.queue: deque[Item] = deque()
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
        item: Item,
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
    def complete(self, conn: Conn, status: int, keep_alive: bool) -> None:
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

    def fail(self, conn: Conn, kind: str) -> None:
        item = conn.active
        if item is not None:
            conn.active = None
            self.finish(item, kind, conn.sent_at, None)
        self.drop(conn)

    def drop(self, conn: Conn) -> None:
        if conn.closed:
            return
        conn.closed = True
        self.open -= 1
        self.conns.discard(conn)
        if conn.transport is not None:
            conn.transport.abort()
        self.pump()

    def release(self, conn: Conn) -> None:
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
        conn = Conn(self)
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
    run = Run(target, plan, t0)
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
    return build_result(run, scheduled, elapsed)


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
