"""The notification-service contract, shared by this challenge's reference designs.

``POST /v1/events {"event_id": "<uuid>", "type": "order_placed|order_shipped|order_delivered",
"user_id": "<id>", "data": {}}`` answers ``202`` once the event is accepted, ``400 {"error"}``
for an invalid body and ``503 {"error"}`` when the design cannot accept it right now.

Each accepted event becomes one ``POST {PROVIDER_URL}/v1/send`` with the bearer token and
``idempotency_key`` = ``event_id``. :class:`ProviderClient` makes one attempt and says what
happened (:class:`Attempt`); the retry policy is each design's own decision.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

import aiohttp
from aiohttp import web

from challenges.service import json_error

MAX_ID_LENGTH = 128
MESSAGES = {
    "order_placed": "We received your order{order}.",
    "order_shipped": "Your order{order} is on its way.",
    "order_delivered": "Your order{order} was delivered.",
}


class InvalidEvent(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Event:
    event_id: str
    type: str
    user_id: str
    data: dict[str, Any]

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "event_id": self.event_id,
                "type": self.type,
                "user_id": self.user_id,
                "data": self.data,
            }
        ).encode()

    @property
    def message(self) -> str:
        order = self.data.get("order_id")
        return MESSAGES[self.type].format(order=f" #{order}" if order else "")

    def send_body(self) -> dict[str, str]:
        return {
            "idempotency_key": self.event_id,
            "user_id": self.user_id,
            "event_id": self.event_id,
            "channel": "email",
            "message": self.message,
        }


def _identifier(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value or len(value) > MAX_ID_LENGTH:
        raise InvalidEvent(f"{name} must be a string of 1..{MAX_ID_LENGTH} characters")
    return value


def parse_event(body: bytes) -> Event:
    """Validate a request body; :class:`InvalidEvent` says what is wrong."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidEvent("body must be a JSON object") from None
    if not isinstance(data, dict):
        raise InvalidEvent("body must be a JSON object")
    event_id = _identifier(data, "event_id")
    kind = data.get("type")
    if kind not in MESSAGES:
        raise InvalidEvent(f"type must be one of {', '.join(MESSAGES)}")
    user_id = _identifier(data, "user_id")
    extra = data.get("data", {})
    if not isinstance(extra, dict):
        raise InvalidEvent("data must be a JSON object")
    return Event(event_id, kind, user_id, extra)


class Outcome(Enum):
    DELIVERED = "delivered"
    THROTTLED = "throttled"  # 429: wait retry_after_s
    FAILED = "failed"  # 5xx or no answer: it did not take the message, try again
    UNKNOWN = "unknown"  # timed out waiting: it may have taken it


@dataclass(frozen=True, slots=True)
class Attempt:
    outcome: Outcome
    retry_after_s: float = 0.0
    detail: str = ""


def retry_after(headers: Mapping[str, str], default: float = 1.0) -> float:
    try:
        return max(0.0, float(headers.get("Retry-After", default)))
    except ValueError:
        return default


class ProviderClient:
    """One HTTP session to the provider; ``send`` makes exactly one attempt."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        connections: int = 128,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.url = url.rstrip("/") + "/v1/send"
        self.tls = tls  # for an HTTPS URL under the environment's CA
        self.headers = {"Authorization": f"Bearer {token}"}
        self.connections = connections
        self.session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.connections, ssl=self.tls or True),
            headers=self.headers,
        )

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def send(self, event: Event, timeout_s: float) -> Attempt:
        assert self.session is not None, "open() the client first"
        try:
            async with self.session.post(
                self.url, json=event.send_body(), timeout=aiohttp.ClientTimeout(total=timeout_s)
            ) as resp:
                await resp.read()
                if resp.status == 200:
                    return Attempt(Outcome.DELIVERED)
                if resp.status == 429:
                    return Attempt(Outcome.THROTTLED, retry_after(resp.headers), "429")
                return Attempt(Outcome.FAILED, detail=f"HTTP {resp.status}")
        except TimeoutError:
            return Attempt(Outcome.UNKNOWN, detail=f"no answer within {timeout_s:g} s")
        except (aiohttp.ClientError, OSError, asyncio.IncompleteReadError) as exc:
            return Attempt(Outcome.FAILED, detail=type(exc).__name__)


Accept = Callable[[Event], Awaitable[web.Response]]


def build_app(accept: Accept) -> web.Application:
    """``POST /v1/events``: validate, then let the design ``accept`` the event."""

    async def handle(request: web.Request) -> web.Response:
        try:
            event = parse_event(await request.read())
        except InvalidEvent as exc:
            return json_error(400, str(exc))
        return await accept(event)

    app = web.Application()
    app.router.add_post("/v1/events", handle)
    return app


def accepted() -> web.Response:
    return web.json_response({"status": "accepted"}, status=202)
