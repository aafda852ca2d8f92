"""The event-ingestion contract, shared by this challenge's reference designs.

``POST /v1/events {"events": [{"event_id", "site", "path", "ts"}, ...]}`` (1..500 events)
answers ``202 {"accepted": n}``; ``GET /v1/stats?site=&from=&to=`` answers
``{"total": n, "paths": {"/a": n}}`` over ``from <= ts < to`` (epoch seconds). Invalid
input answers ``400 {"error"}``; a store that does not answer within the deadline, ``503``.

A design supplies :class:`Store` (``ingest`` a batch exactly once per event_id, ``stats``
for a window); parsing, validation, deadlines and responses live here so that the
designs differ only in where the counts live.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from aiohttp import web

from challenges.service import StoreUnavailable, json_error, warn_throttled

MAX_BATCH = 500
MAX_FIELD = 256
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Event:
    event_id: str
    site: str
    path: str
    ts: int


@dataclass(frozen=True, slots=True)
class Window:
    site: str
    start: int  # inclusive
    end: int  # exclusive


class Invalid(ValueError):
    pass


class Store(Protocol):
    async def ingest(self, events: list[Event]) -> None:
        """Count each event once, however often its event_id is sent."""
        ...

    async def stats(self, window: Window) -> dict[str, int]:
        """Events per path in the window (paths with none may be left out)."""
        ...


def _text(event: dict[str, object], name: str) -> str:
    value = event.get(name)
    if not isinstance(value, str) or not value or len(value) > MAX_FIELD:
        raise Invalid(f"{name} must be a string of 1..{MAX_FIELD} characters")
    return value


def _integer(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise Invalid(f"{name} must be a non-negative integer (epoch seconds)")
    return value


def parse_batch(body: bytes) -> list[Event]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise Invalid("body must be a JSON object") from None
    events = data.get("events") if isinstance(data, dict) else None
    if not isinstance(events, list) or not events:
        raise Invalid("events must be a non-empty list")
    if len(events) > MAX_BATCH:
        raise Invalid(f"at most {MAX_BATCH} events per batch, got {len(events)}")
    out = []
    for e in events:
        if not isinstance(e, dict):
            raise Invalid("each event must be a JSON object")
        out.append(
            Event(
                _text(e, "event_id"),
                _text(e, "site"),
                _text(e, "path"),
                _integer(e.get("ts"), "ts"),
            )
        )
    return out


def parse_window(query: dict[str, str]) -> Window:
    site = query.get("site", "")
    if not site or len(site) > MAX_FIELD:
        raise Invalid(f"site must be given (1..{MAX_FIELD} characters)")
    try:
        start, end = int(query.get("from", "")), int(query.get("to", ""))
    except ValueError:
        raise Invalid("from and to must be integers (epoch seconds)") from None
    if start < 0 or end < start:
        raise Invalid("need 0 <= from <= to")
    return Window(site, start, end)


def _ignore_late_result(task: asyncio.Future[object]) -> None:
    if not task.cancelled():
        task.exception()


async def within(deadline_s: float, work: Awaitable[T]) -> T:
    """``work``'s result, or StoreUnavailable after ``deadline_s`` (the work goes on)."""
    task = asyncio.ensure_future(work)
    done, _ = await asyncio.wait((task,), timeout=deadline_s)
    if not done:
        task.add_done_callback(_ignore_late_result)
        raise StoreUnavailable(f"no answer within {deadline_s:g} s")
    return task.result()


def build_app(
    store: Store, *, deadline_s: float, errors: tuple[type[Exception], ...] = ()
) -> web.Application:
    """The two routes; ``errors`` are the store's exceptions that mean "unavailable" (503)."""
    unavailable = (StoreUnavailable, OSError, *errors)

    def guarded(
        handler: Callable[[web.Request], Awaitable[web.Response]],
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            try:
                return await handler(request)
            except Invalid as exc:
                return json_error(400, str(exc))
            except unavailable as exc:
                warn_throttled(request.path, f"store unavailable: {type(exc).__name__}: {exc}")
                return json_error(503, "store unavailable; retry")

        return handle

    async def post_events(request: web.Request) -> web.Response:
        events = parse_batch(await request.read())
        await within(deadline_s, store.ingest(events))
        return web.json_response({"accepted": len(events)}, status=202)

    async def get_stats(request: web.Request) -> web.Response:
        window = parse_window(dict(request.query))
        paths = await within(deadline_s, store.stats(window))
        paths = {p: n for p, n in paths.items() if n}
        return web.json_response({"total": sum(paths.values()), "paths": paths})

    app = web.Application(client_max_size=4 * 1024 * 1024)
    app.router.add_post("/v1/events", guarded(post_events))
    app.router.add_get("/v1/stats", guarded(get_stats))
    return app
