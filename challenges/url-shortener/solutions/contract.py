"""The url-shortener HTTP contract, shared by this challenge's reference designs.

* ``POST /v1/links {"url": "..."}`` → ``201 {"code": "...", "url": "..."}``
* ``GET /{code}`` → ``302`` with ``Location: <url>``, ``404`` for an unknown code
* ``PUT /v1/links/{code} {"url": "..."}`` → ``200 {"code", "url"}``, ``404`` if unknown
* ``DELETE /v1/links/{code}`` → ``204``, ``404`` if unknown; afterwards ``GET`` → ``404``
* ``400 {"error": ...}`` for a body that is not JSON, or a URL that is not an absolute
  ``http``/``https`` URL of at most :data:`MAX_URL_LENGTH` characters without
  whitespace or control characters (it ends up in a ``Location`` header).
* ``503 {"error": ...}`` when the store does not answer within the deadline.

A design only supplies the storage (:class:`Links`); parsing, validation and the
responses live here so that the designs differ only in where a redirect is read from.
Codes are :data:`CODE_LENGTH` characters of ``[0-9A-Za-z]``, so ``/healthz`` (seven
characters) can never be mistaken for one.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import string
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar
from urllib.parse import urlsplit

from aiohttp import web

from challenges.service import StoreUnavailable, json_error, warn_throttled

MAX_URL_LENGTH = 2048
CODE_LENGTH = 8
CODE_ALPHABET = string.ascii_letters + string.digits
CODE_ROUTE = f"{{code:[0-9A-Za-z]{{{CODE_LENGTH}}}}}"
MAX_BODY = 16 * 1024
CREATE_ATTEMPTS = 5

T = TypeVar("T")


class InvalidRequest(ValueError):
    pass


class Links(Protocol):
    """Where links live. Every method raises :class:`StoreUnavailable` (or ``OSError``)
    when its store cannot answer."""

    async def create(self, code: str, url: str) -> bool:
        """Store a new link; False when ``code`` is taken."""
        ...

    async def resolve(self, code: str) -> str | None:
        """The link's URL, or None when there is no such code."""
        ...

    async def update(self, code: str, url: str) -> bool:
        """Point ``code`` at ``url``; False when there is no such code."""
        ...

    async def delete(self, code: str) -> bool:
        """Remove the link; False when there is no such code."""
        ...


def new_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def parse_url(body: bytes) -> str:
    """The ``url`` of a JSON body, validated (see the module docstring)."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("body must be a JSON object") from None
    if not isinstance(data, dict):
        raise InvalidRequest("body must be a JSON object")
    url = data.get("url")
    if not isinstance(url, str) or not url:
        raise InvalidRequest("url must be a non-empty string")
    if len(url) > MAX_URL_LENGTH:
        raise InvalidRequest(f"url must be at most {MAX_URL_LENGTH} characters")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise InvalidRequest("url must not contain whitespace or control characters")
    try:
        parts = urlsplit(url)
    except ValueError:
        raise InvalidRequest("url is not a valid URL") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise InvalidRequest("url must be an absolute http:// or https:// URL")
    return url


def _ignore_late_result(task: asyncio.Future[object]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved, so asyncio does not log it


async def bounded(call: Awaitable[T], deadline_s: float) -> T:
    """``call``'s result, or StoreUnavailable after ``deadline_s``.

    A task rather than a cancellation: a driver may spend seconds cancelling a
    statement on a paused server, and the answer must not wait for that.
    """
    task = asyncio.ensure_future(call)
    done, _ = await asyncio.wait((task,), timeout=deadline_s)
    if not done:
        task.add_done_callback(_ignore_late_result)
        raise StoreUnavailable(f"no answer within {deadline_s:g} s")
    return task.result()


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _guarded(handler: Handler) -> Handler:
    """Answer 503 when the store is unavailable, 400 on invalid input."""

    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except InvalidRequest as exc:
            return json_error(400, str(exc))
        except (StoreUnavailable, OSError) as exc:
            warn_throttled("store", f"store unavailable: {type(exc).__name__}: {exc}")
            return json_error(503, "store unavailable")

    return handle


def build_app(links: Links, *, deadline_s: float) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY)

    async def create(request: web.Request) -> web.StreamResponse:
        url = parse_url(await request.read())
        for _ in range(CREATE_ATTEMPTS):
            code = new_code()
            if await bounded(links.create(code, url), deadline_s):
                return web.json_response({"code": code, "url": url}, status=201)
        return json_error(503, "could not allocate a code")

    async def redirect(request: web.Request) -> web.StreamResponse:
        url = await bounded(links.resolve(request.match_info["code"]), deadline_s)
        if url is None:
            return json_error(404, "no such link")
        return web.Response(status=302, headers={"Location": url})

    async def update(request: web.Request) -> web.StreamResponse:
        code = request.match_info["code"]
        url = parse_url(await request.read())
        if not await bounded(links.update(code, url), deadline_s):
            return json_error(404, "no such link")
        return web.json_response({"code": code, "url": url})

    async def delete(request: web.Request) -> web.StreamResponse:
        if not await bounded(links.delete(request.match_info["code"]), deadline_s):
            return json_error(404, "no such link")
        return web.Response(status=204)

    app.router.add_post("/v1/links", _guarded(create))
    app.router.add_put(f"/v1/links/{CODE_ROUTE}", _guarded(update))
    app.router.add_delete(f"/v1/links/{CODE_ROUTE}", _guarded(delete))
    app.router.add_get(f"/{CODE_ROUTE}", _guarded(redirect))
    return app
