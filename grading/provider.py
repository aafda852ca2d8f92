"""A simulated third-party API: the building block behind ``PROVIDER_URL``.

It starts with the environment, so a learner's service can call it from the start. It
checks the bearer token, validates bodies, and keeps its own record of every call. During
a grade the grader scripts it through an admin API: windows of slow answers, 429s, 5xx,
or a full outage (connections dropped unanswered) — the faults a real provider has.

Idempotency keys are honoured as documented providers honour them (Stripe,
https://docs.stripe.com/api/idempotent_requests; the IETF draft "The Idempotency-Key HTTP
Header Field", https://datatracker.ietf.org/doc/draft-ietf-httpapi-idempotency-key-header/):
within ``Endpoint.idempotency_window_s`` of the first *accepted* call with a key, a call with
the same key and the same body is not a second operation — the first response is replayed
(same ``id``, header ``Idempotent-Replayed: true``); the same key with another body is refused
with ``422``; while the first call with a key is still being answered, another gets ``409``.
A call answered with a scripted failure (429, 5xx, dropped) did not happen, so a retry of it
is a new attempt. A key sent in a body field (``Endpoint.key``) or in an ``Idempotency-Key``
header both count.

A challenge declares its endpoints and runs it with ``python -m <its module> --port N``:

    from grading.provider import Endpoint, main
    main([Endpoint("POST", "/v1/send", required=("idempotency_key", "message"), key="idempotency_key")])

A read API is a ``GET`` endpoint with ``records=True`` (``Endpoint("GET", "/v1/items/{id}",
records=True, latency_ms=100, rate_limit=30)``): it answers the JSON record the grader stored
under the request's path (``PUT /_admin/records``), or ``404``, each answer taking
``latency_ms``; beyond ``rate_limit`` answered calls in the last second it answers ``429`` with
``Retry-After: 1`` at once, as rate-limited APIs do (RFC 6585 §4).

Slow work is an endpoint with ``work_ms=(lo, hi)`` (each accepted call takes a time in that
range, fixed by its body) and ``result_of="<field>"``: the answer carries ``"result"``, a digest
of that field keyed with the admin token (:func:`result_digest`), which the grader can check and
a service cannot make up without calling.

Tokens come from the environment (``PROVIDER_TOKEN``, ``PROVIDER_ADMIN_TOKEN``), never argv.
The command line, the admin routes and their payloads are ``provisioning/provider_protocol.py``,
which the local backend's driver that starts and probes the provider uses too.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import signal
import ssl
import sys
import time
import uuid
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import aiohttp
from aiohttp import web

from provisioning import provider_protocol as protocol
from provisioning.local.tlsrelay import BAN_S, Throttle
from provisioning.provider_protocol import ADMIN_HEADER

Mode = Literal["slow", "throttle", "error", "outage"]


IDEMPOTENCY_WINDOW_S = 24 * 3600.0  # Stripe keeps a key for at least 24 hours
REPLAYED_HEADER = "Idempotent-Replayed"
RATE_WINDOW_S = 1.0  # rate_limit counts the calls answered in the last second


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    required: tuple[str, ...] = ()
    key: str | None = None  # body field identifying the operation (e.g. an idempotency key)
    idempotency_window_s: float | None = IDEMPOTENCY_WINDOW_S  # None: every call counts
    records: bool = False  # GET: answer the record stored under the request's path, else 404
    latency_ms: int = 0  # records: every answer takes this long
    rate_limit: int | None = None  # records: answered calls per RATE_WINDOW_S, then 429
    work_ms: tuple[int, int] | None = None  # every accepted call takes lo..hi ms (per body)
    result_of: str | None = None  # answer "result": result_digest(admin token, body[this])

    def work_s(self, body: Mapping[str, Any]) -> float:
        """How long an accepted call with ``body`` works: a fixed point of ``work_ms`` drawn
        from the body's digest (the same body always takes the same time), in seconds."""
        if self.work_ms is None:
            return 0.0
        lo, hi = self.work_ms
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).digest()
        return (lo + (hi - lo) * int.from_bytes(digest[:8], "big") / 2**64) / 1000


def result_digest(admin_token: str, value: object) -> str:
    """The result an endpoint with ``result_of`` answers for ``value``: HMAC-SHA256 keyed with
    the provider's admin token, 32 hex digits. The grader can compute it; a learner's service
    cannot, without calling the provider."""
    return hmac.new(admin_token.encode(), str(value).encode(), hashlib.sha256).hexdigest()[:32]


@dataclass(frozen=True)
class Window:
    """From ``start_s`` to ``end_s`` after the script was set, answer a share of calls badly."""

    start_s: float
    end_s: float
    mode: Mode
    rate: float = 1.0  # share of calls affected, decided per (seed, key, attempt)
    status: int = 503  # for "error"; "throttle" answers 429
    delay_ms: int = 1000  # for "slow"
    retry_after_s: int = 1  # for "throttle"

    def __post_init__(self) -> None:
        if self.mode not in ("slow", "throttle", "error", "outage"):
            raise ValueError(f"unknown mode {self.mode!r}")
        if not 0 <= self.start_s <= self.end_s or not 0 <= self.rate <= 1:
            raise ValueError("a window needs 0 <= start_s <= end_s and 0 <= rate <= 1")


@dataclass
class Call:
    at: float  # epoch seconds when it arrived
    method: str
    path: str
    key: str | None
    status: int  # what was answered (0: the connection was dropped)
    body: dict[str, Any] = field(default_factory=dict)
    mode: str | None = None  # the scripted window that shaped the answer
    replayed: bool = False  # answered from an earlier accepted call with the same key

    @property
    def delivered(self) -> bool:
        """This call made something happen (a notification the user receives): accepted,
        and not a replay of an earlier call with its idempotency key."""
        return self.status == 200 and not self.replayed


@dataclass
class _Kept:
    """What the provider remembers of an idempotency key."""

    body: dict[str, Any]
    at: float
    answer: dict[str, Any] | None = None  # None while the first call is being answered


class Provider:
    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        token: str,
        admin_token: str,
        records: Mapping[str, dict[str, Any]] | None = None,
    ) -> None:
        self.endpoints = list(endpoints)
        self.token = token
        self.admin_token = admin_token
        self.calls: list[Call] = []
        self.windows: list[Window] = []
        self.script_t0 = time.time()
        self.seed = 0
        self.attempts: dict[str, int] = {}
        self.kept: dict[tuple[str, str], _Kept] = {}  # (path, key) -> its first accepted call
        self.records: dict[str, dict[str, Any]] = dict(records or {})  # request path -> record
        self.answered: dict[str, deque[float]] = {}  # endpoint path -> recent answered calls

    def app(self) -> web.Application:
        app = web.Application(client_max_size=256 * 1024)
        app.router.add_get(protocol.HEALTHZ, self.healthz)
        app.router.add_get(protocol.PING, self.ping)
        app.router.add_put(protocol.SCRIPT, self.set_script)
        app.router.add_get(protocol.CALLS, self.list_calls)
        app.router.add_post(protocol.RESET, self.reset)
        app.router.add_put(protocol.RECORDS, self.set_records)
        for ep in self.endpoints:
            handler = self.record_handler(ep) if ep.records else self.handler(ep)
            app.router.add_route(ep.method, ep.path, handler)
        return app

    # -- admin ------------------------------------------------------------------------
    def _admin(self, request: web.Request) -> None:
        given = request.headers.get(ADMIN_HEADER, "")
        if not hmac.compare_digest(given.encode(), self.admin_token.encode()):
            raise web.HTTPUnauthorized(text="admin token required")

    async def healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def ping(self, request: web.Request) -> web.Response:
        self._admin(request)
        return web.json_response(protocol.ping_answer(len(self.calls)))

    async def set_script(self, request: web.Request) -> web.Response:
        self._admin(request)
        try:
            data = await request.json()
            windows = [Window(**w) for w in data.get("windows", [])]
            seed = int(data.get("seed", 0))
        except (ValueError, TypeError) as exc:
            raise web.HTTPBadRequest(text=f"bad script: {exc}") from None
        self.windows, self.seed, self.script_t0 = windows, seed, time.time()
        return web.json_response({"ok": True, "t0": self.script_t0})

    async def list_calls(self, request: web.Request) -> web.Response:
        self._admin(request)
        since = int(request.query.get("since", "0"))
        return web.json_response({"calls": [asdict(c) for c in self.calls[since:]]})

    async def reset(self, request: web.Request) -> web.Response:
        """Forget the calls, keys and script; the records stay (they are data, not history)."""
        self._admin(request)
        self.calls.clear()
        self.attempts.clear()
        self.kept.clear()
        self.answered.clear()
        self.windows = []
        return web.json_response({"ok": True})

    async def set_records(self, request: web.Request) -> web.Response:
        """Store (an object) or delete (null) the record of each path; answer when it was
        done, in epoch seconds: a read from then on sees it."""
        self._admin(request)
        try:
            data = await request.json()
            records = data["records"]
            if not isinstance(records, dict) or not all(
                isinstance(r, dict) or r is None for r in records.values()
            ):
                raise ValueError("records maps paths to objects or null")
        except (ValueError, TypeError, KeyError) as exc:
            raise web.HTTPBadRequest(text=f"bad records: {exc}") from None
        for path, record in records.items():
            if record is None:
                self.records.pop(path, None)
            else:
                self.records[path] = record
        return web.json_response({"ok": True, "t": time.time()})

    # -- the simulated API ------------------------------------------------------------
    def _window(self, key: str | None, now: float) -> Window | None:
        """The scripted window shaping this call, if any (deterministic per key attempt)."""
        t = now - self.script_t0
        attempt = self.attempts.get(key or "", 0)
        self.attempts[key or ""] = attempt + 1
        for w in self.windows:
            if w.start_s <= t < w.end_s:
                digest = hashlib.sha256(f"{self.seed}:{key}:{attempt}".encode()).digest()
                if int.from_bytes(digest[:8], "big") / 2**64 < w.rate:
                    return w
        return None

    def handler(self, ep: Endpoint):  # type: ignore[no-untyped-def]
        async def handle(request: web.Request) -> web.StreamResponse:
            now = time.time()
            if not self._authorized(request):
                self.calls.append(Call(now, ep.method, ep.path, None, 401))
                return web.json_response({"error": "invalid token"}, status=401)
            try:
                body = await request.json()
                if not isinstance(body, dict):
                    raise ValueError("the body must be a JSON object")
            except (ValueError, json.JSONDecodeError) as exc:
                self.calls.append(Call(now, ep.method, ep.path, None, 400))
                return web.json_response({"error": f"bad JSON: {exc}"}, status=400)
            missing = [f for f in ep.required if body.get(f) in (None, "")]
            key = request.headers.get("Idempotency-Key")
            if key is None and ep.key and body.get(ep.key) is not None:
                key = str(body.get(ep.key))
            if missing:
                self.calls.append(Call(now, ep.method, ep.path, key, 400, body))
                return web.json_response({"error": f"missing {', '.join(missing)}"}, status=400)
            kept = self._kept(ep, key, now)
            if kept is not None:
                return self._repeat(ep, key, body, kept, now)
            window = self._window(key, now)
            call = Call(now, ep.method, ep.path, key, 200, body, window.mode if window else None)
            self.calls.append(call)
            if window is not None and window.mode != "slow":
                return self._fail(request, call, window)
            entry = None
            if key is not None and ep.idempotency_window_s is not None:
                entry = self.kept[(ep.path, key)] = _Kept(body, now)
            answer = {"id": str(uuid.uuid4()), "status": "accepted"}
            if ep.result_of is not None:
                answer["result"] = result_digest(self.admin_token, body.get(ep.result_of))
            delay_s = ep.work_s(body) + (window.delay_ms / 1000 if window is not None else 0)
            try:
                if delay_s:
                    await asyncio.sleep(delay_s)
            except asyncio.CancelledError:  # the client hung up: the send still happened
                if entry is not None:
                    entry.answer = answer
                raise
            if entry is not None:
                entry.answer = answer
            return web.json_response(answer)

        return handle

    def record_handler(self, ep: Endpoint):  # type: ignore[no-untyped-def]
        """A read of the record under the request's path: ``429`` beyond the rate limit, else
        the record (or ``404``) after ``latency_ms``, read when the answer leaves."""

        async def handle(request: web.Request) -> web.StreamResponse:
            now = time.time()
            call = Call(now, ep.method, request.path, None, 200)
            self.calls.append(call)
            if not self._authorized(request):
                call.status = 401
                return web.json_response({"error": "invalid token"}, status=401)
            if self._over_limit(ep, now):
                call.status = 429
                retry = {"Retry-After": str(int(RATE_WINDOW_S))}
                return web.json_response({"error": "rate limited"}, status=429, headers=retry)
            window = self._window(request.path, now)
            call.mode = window.mode if window else None
            if window is not None and window.mode != "slow":
                return self._fail(request, call, window)
            delay_ms = ep.latency_ms + (window.delay_ms if window is not None else 0)
            await asyncio.sleep(delay_ms / 1000)
            record = self.records.get(request.path)
            if record is None:
                call.status = 404
                return web.json_response({"error": "not found"}, status=404)
            return web.json_response(record)

        return handle

    def _authorized(self, request: web.Request) -> bool:
        auth = request.headers.get("Authorization", "")
        return hmac.compare_digest(auth.encode(), f"Bearer {self.token}".encode())

    def _over_limit(self, ep: Endpoint, now: float) -> bool:
        """Whether ``ep`` already answered ``rate_limit`` calls in the last second (a sliding
        window); a call that is not over the limit is counted."""
        if ep.rate_limit is None:
            return False
        recent = self.answered.setdefault(ep.path, deque())
        while recent and recent[0] <= now - RATE_WINDOW_S:
            recent.popleft()
        if len(recent) >= ep.rate_limit:
            return True
        recent.append(now)
        return False

    def _kept(self, ep: Endpoint, key: str | None, now: float) -> _Kept | None:
        """The first accepted call with ``key``, while the endpoint still remembers it."""
        if key is None or ep.idempotency_window_s is None:
            return None
        kept = self.kept.get((ep.path, key))
        if kept is not None and now - kept.at > ep.idempotency_window_s:
            del self.kept[(ep.path, key)]
            return None
        return kept

    def _repeat(
        self, ep: Endpoint, key: str | None, body: dict[str, Any], kept: _Kept, now: float
    ) -> web.Response:
        """A call with a key already used: 422 for another body, 409 while the first call is
        still being answered, else the first answer replayed (nothing happens again)."""
        call = Call(now, ep.method, ep.path, key, 422, body)
        self.calls.append(call)
        if body != kept.body:
            return web.json_response(
                {"error": "this idempotency key was used with a different body"}, status=422
            )
        if kept.answer is None:
            call.status = 409
            return web.json_response(
                {"error": "a request with this idempotency key is still in progress"},
                status=409,
            )
        call.status, call.replayed = 200, True
        return web.json_response(kept.answer, headers={REPLAYED_HEADER: "true"})

    @staticmethod
    def _fail(request: web.Request, call: Call, window: Window) -> web.Response:
        """Answer ``call`` as the scripted failure ``window`` says (nothing was sent)."""
        if window.mode == "outage":
            call.status = 0
            if request.transport is not None:
                request.transport.abort()  # no answer at all: the connection drops
            return web.Response(status=503)
        if window.mode == "throttle":
            call.status = 429
            return web.json_response(
                {"error": "rate limited"},
                status=429,
                headers={"Retry-After": str(window.retry_after_s)},
            )
        call.status = window.status
        return web.json_response({"error": "provider failure"}, status=window.status)


class ProviderAdmin:
    """The grader's handle on a running provider."""

    def __init__(self, url: str, admin_token: str, timeout_s: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.admin_token = admin_token
        self.headers = {ADMIN_HEADER: admin_token}
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)

    @classmethod
    def of(cls, admin: Mapping[str, str], timeout_s: float = 5.0) -> ProviderAdmin:
        """The handle on the provider whose ``ResourceInfo.admin`` is ``admin``."""
        return cls(admin[protocol.ADMIN_URL], admin[protocol.ADMIN_TOKEN], timeout_s)

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        async with (
            aiohttp.ClientSession(timeout=self.timeout, headers=self.headers) as http,
            http.request(method, f"{self.url}{path}", **kwargs) as resp,
        ):
            resp.raise_for_status()
            return await resp.json()

    def result(self, value: object) -> str:
        """What an endpoint with ``result_of`` answers for ``value`` (:func:`result_digest`)."""
        return result_digest(self.admin_token, value)

    async def script(self, windows: Sequence[Window], seed: int = 0) -> float:
        """Replace the script; return its time origin (epoch seconds)."""
        data = await self._call(
            "PUT", protocol.SCRIPT, json={"windows": [asdict(w) for w in windows], "seed": seed}
        )
        return float(data["t0"])

    async def calls(self, since: int = 0) -> list[Call]:
        data = await self._call("GET", f"{protocol.CALLS}?since={since}")
        return [Call(**c) for c in data["calls"]]

    async def deliveries(
        self, field: str, values: Iterable[object], *, replays: bool = False
    ) -> Counter[object]:
        """How many calls did something (:attr:`Call.delivered`; with ``replays``, every call
        answered 200, a replay of a key too) for each of ``values`` of body field ``field``;
        calls whose field holds another value are left out."""
        wanted = set(values)
        return Counter(
            c.body.get(field)
            for c in await self.calls()
            if c.body.get(field) in wanted and (c.delivered or (replays and c.status == 200))
        )

    async def reset(self) -> None:
        await self._call("POST", protocol.RESET)

    async def put_records(self, records: Mapping[str, dict[str, Any] | None]) -> float:
        """Store (or, for None, delete) each path's record; return when it was done (epoch
        seconds)."""
        data = await self._call("PUT", protocol.RECORDS, json={"records": dict(records)})
        return float(data["t"])


def main(
    endpoints: Sequence[Endpoint],
    argv: Sequence[str] | None = None,
    records: Mapping[str, dict[str, Any]] | None = None,
) -> None:
    args = protocol.parse_args(argv)
    token = os.environ.get(protocol.ENV_TOKEN)
    admin = os.environ.get(protocol.ENV_ADMIN_TOKEN)
    if not token or not admin:
        sys.exit(f"error: {protocol.ENV_TOKEN} and {protocol.ENV_ADMIN_TOKEN} must be set")
    provider = Provider(endpoints, token, admin, records)
    if args.public_port is None:
        web.run_app(provider.app(), host=args.host, port=args.port, access_log=None, print=None)
        return
    if not (args.public_host and args.tls_cert and args.tls_key):
        sys.exit("error: --public-port needs --public-host, --tls-cert and --tls-key")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(args.tls_cert, args.tls_key)
    public = provider.app()
    # the grader's routes stay on loopback; bad tokens are throttled per address
    public.middlewares.extend([_throttled(Throttle(None)), _no_admin])
    sites = [(provider.app(), args.host, args.port, None)]
    sites.append((public, args.public_host, args.public_port, ctx))
    asyncio.run(_serve(sites))


def _throttled(throttle: Throttle) -> Any:
    """The public site's rule for bad bearer tokens, the one the TLS relays apply to the other
    resources (:class:`provisioning.local.tlsrelay.Throttle`): after ``FAIL_LIMIT`` answers
    ``401`` to one client address within ``FAIL_WINDOW_S``, every request from it is answered
    ``429`` with ``Retry-After`` (RFC 6585 section 4) for ``BAN_S``, the right token included,
    without reaching the API (nor its record of calls)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        address = request.remote or ""
        if throttle.refused(address):
            return web.json_response(
                {"error": "too many failed authentications from this address"},
                status=429,
                headers={"Retry-After": str(int(BAN_S))},
            )
        response = await handler(request)
        if response.status == 401:
            throttle.fail(address)
        return response

    return middleware


@web.middleware
async def _no_admin(request: web.Request, handler: Any) -> web.StreamResponse:
    if request.path.startswith(protocol.ADMIN_PREFIX):
        raise web.HTTPNotFound()
    return await handler(request)


async def _serve(
    sites: list[tuple[web.Application, str, int, ssl.SSLContext | None]],
) -> None:
    """Serve each app on its site (plain on loopback for the grader, HTTPS for learners:
    https://docs.aiohttp.org/en/stable/web_advanced.html#application-runners) until
    SIGTERM or SIGINT. The apps share one provider, hence one record of calls."""
    runners = []
    for app, host, port, ctx in sites:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, host, port, ssl_context=ctx).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for runner in runners:
            await runner.cleanup()
