"""The rate-limiter HTTP contract, shared by this challenge's reference designs.

``POST /v1/check {"key": "<1..128 chars>", "cost": 1}`` answers
``200 {"allowed": true, "remaining": n}`` or
``429 {"allowed": false, "retry_after_ms": n}`` (n > 0), ``400 {"error": ...}``
on invalid input, and ``503 {"error": ...}`` when the design's store does not
answer in time. A design only supplies the decision (:class:`Limiter`); the
parsing, validation and responses live here so that every design answers the
contract identically and differs only in how it decides.

A ``cost`` larger than ``RATE_LIMIT`` can never be admitted, whatever the
store holds: it is answered 429 with ``retry_after_ms`` of one whole window
without touching the store.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web

from challenges.service import StoreUnavailable, env_int, json_error, warn_throttled

MAX_KEY_LENGTH = 128


@dataclass(frozen=True, slots=True)
class Limits:
    limit: int
    window_s: int

    @property
    def window_ms(self) -> int:
        return self.window_s * 1000

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Limits:
        """``RATE_LIMIT`` (default 20) and ``RATE_WINDOW_SECONDS`` (default 10)."""
        return cls(
            limit=env_int(env, "RATE_LIMIT", 20),
            window_s=env_int(env, "RATE_WINDOW_SECONDS", 10),
        )


@dataclass(frozen=True, slots=True)
class Check:
    key: str
    cost: int


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    remaining: int = 0
    retry_after_ms: int = 0

    @classmethod
    def allow(cls, remaining: float) -> Decision:
        return cls(True, remaining=max(0, math.floor(remaining)))

    @classmethod
    def deny(cls, retry_after_s: float) -> Decision:
        # Rounded up, and never 0: the contract promises a positive wait.
        return cls(False, retry_after_ms=max(1, math.ceil(retry_after_s * 1000)))


class InvalidRequest(ValueError):
    pass


class Limiter(Protocol):
    async def decide(self, check: Check) -> Decision:
        """Admit or deny ``check`` atomically in the store; raise
        :class:`~challenges.service.StoreUnavailable` (or let a store error
        escape) when the store cannot answer."""
        ...


def parse_check(body: bytes) -> Check:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("body must be a JSON object") from None
    if not isinstance(data, dict):
        raise InvalidRequest("body must be a JSON object")
    key = data.get("key")
    if not isinstance(key, str) or not key:
        raise InvalidRequest("key must be a non-empty string")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidRequest(f"key must be at most {MAX_KEY_LENGTH} characters")
    cost = data.get("cost", 1)
    # bool is an int in Python; JSON true is not a cost.
    if not isinstance(cost, int) or isinstance(cost, bool) or cost < 1:
        raise InvalidRequest("cost must be an integer >= 1")
    return Check(key, cost)


def respond(decision: Decision) -> web.Response:
    if decision.allowed:
        return web.json_response({"allowed": True, "remaining": decision.remaining})
    return web.json_response(
        {"allowed": False, "retry_after_ms": decision.retry_after_ms},
        status=429,
        headers={"Retry-After": str(math.ceil(decision.retry_after_ms / 1000))},
    )


def _ignore_late_result(task: asyncio.Future[Decision]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved, so asyncio does not log it as never retrieved


def check_handler(
    limiter: Limiter, limits: Limits, *, deadline_s: float
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The ``POST /v1/check`` handler: validate, ask ``limiter``, answer.

    ``deadline_s`` bounds the store's answer: past it the request is answered
    503 rather than left hanging while a store is paused or restarting. The
    limiter raises :class:`~challenges.service.StoreUnavailable` for a store it
    cannot reach; any other error is a bug and answers 500.
    """

    async def handle(request: web.Request) -> web.Response:
        try:
            check = parse_check(await request.read())
        except InvalidRequest as exc:
            return json_error(400, str(exc))
        if check.cost > limits.limit:
            return respond(Decision.deny(limits.window_s))
        # A task rather than a cancellation: a driver may spend seconds
        # cancelling a statement on a paused server, and the answer must not
        # wait for that. A late task still finishes (and may still count).
        task = asyncio.ensure_future(limiter.decide(check))
        done, _ = await asyncio.wait((task,), timeout=deadline_s)
        if not done:
            task.add_done_callback(_ignore_late_result)
            warn_throttled("check", f"store did not answer within {deadline_s:g} s")
            return json_error(503, "store unavailable")
        try:
            decision = task.result()
        except (StoreUnavailable, OSError) as exc:
            warn_throttled("check", f"store unavailable: {type(exc).__name__}: {exc}")
            return json_error(503, "store unavailable")
        return respond(decision)

    return handle


def build_app(limiter: Limiter, limits: Limits, *, deadline_s: float) -> web.Application:
    app = web.Application()
    app.router.add_post("/v1/check", check_handler(limiter, limits, deadline_s=deadline_s))
    return app
