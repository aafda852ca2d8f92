"""The background-jobs contract, shared by this challenge's reference designs.

The web process: ``POST /v1/jobs`` with header ``Idempotency-Key`` (1..255 printable ASCII
characters) and ``{"input": "<1..200 characters>"}`` stores a job and answers
``202 {"id", "status"}`` at once; a retry with the key gets the same job, the key with another
input ``422``, a bad request ``400``, a store that cannot be reached ``503``.
``GET /v1/jobs/<id>`` reads a job (``404`` when unknown). Where jobs wait is each design's own.

A worker process (:func:`run_worker`) takes jobs and renders each with :class:`Renderer`, the
job's id as the rendering service's ``Idempotency-Key``: a job run again after its worker died
(at-least-once delivery) replays the first render instead of paying for a second one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from challenges.service import (
    Invalid,
    Refused,
    idempotency_key,
    json_error,
    json_object,
    tls_context,
)

MAX_KEY_LENGTH = 255
MAX_INPUT_LENGTH = 200
RENDER_TIMEOUT_S = 5.0  # one call to the rendering service (it takes RENDER_MS)
RENDER_ATTEMPTS = 5  # a 5xx, a 409 (the same key still in flight) or a dropped call: again
log = logging.getLogger("worker")


@dataclass(frozen=True, slots=True)
class Submitted:
    key: str
    input: str


def new_job_id() -> str:
    return "job_" + secrets.token_hex(12)


def parse(key: str | None, raw: bytes) -> Submitted:
    """Validate the header and the body; :class:`Invalid` says what is wrong."""
    key = idempotency_key(key, MAX_KEY_LENGTH)
    text = json_object(raw).get("input")
    if not isinstance(text, str) or not 1 <= len(text) <= MAX_INPUT_LENGTH:
        raise Invalid(f"input must be a string of 1..{MAX_INPUT_LENGTH} characters")
    return Submitted(key, text)


def job(job_id: str, status: str, result: str | None = None) -> dict[str, Any]:
    """A job as the API shows it."""
    return {"id": job_id, "status": status} | ({"result": result} if result else {})


Submit = Callable[[Submitted], Awaitable[dict[str, Any]]]
Read = Callable[[str], Awaitable[dict[str, Any] | None]]


def build_app(submit: Submit, read: Read) -> web.Application:
    """The routes: validate, then let the design ``submit`` a job (→ the job; :class:`Refused`
    to refuse) or ``read`` one (None: unknown)."""

    async def post(request: web.Request) -> web.Response:
        try:
            body = await submit(parse(request.headers.get("Idempotency-Key"), await request.read()))
        except Invalid as exc:
            return json_error(400, str(exc))
        except Refused as exc:
            return json_error(exc.status, str(exc))
        return web.json_response(body, status=202)

    async def get(request: web.Request) -> web.Response:
        try:
            found = await read(request.match_info["job_id"])
        except Refused as exc:
            return json_error(exc.status, str(exc))
        return json_error(404, "no such job") if found is None else web.json_response(found)

    app = web.Application()
    app.router.add_post("/v1/jobs", post)
    app.router.add_get("/v1/jobs/{job_id}", get)
    return app


class Renderer:
    """One HTTP session to the rendering service."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.url = env["PROVIDER_URL"].rstrip("/") + "/v1/render"
        self.headers = {"Authorization": f"Bearer {env['PROVIDER_TOKEN']}"}
        self.tls = tls_context(env)
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Renderer:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=64, ssl=self.tls or True), headers=self.headers
        )
        return self

    async def __aexit__(self, *_: object) -> None:
        if self.session is not None:
            await self.session.close()

    async def render(self, text: str, key: str | None) -> str:
        """The render's result for ``text``, with ``key`` as the service's idempotency key
        (``None``: none, every call a render billed). Retries a 5xx, a 409 or a dropped call up
        to ``RENDER_ATTEMPTS`` times with the same key (only with a key); then raises
        ``RuntimeError``: the job stays to be taken again."""
        assert self.session is not None, "enter the renderer first"
        headers = {"Idempotency-Key": key} if key else {}
        failure = "no attempt"
        for attempt in range(RENDER_ATTEMPTS):
            try:
                async with self.session.post(
                    self.url,
                    json={"input": text},
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=RENDER_TIMEOUT_S),
                ) as resp:
                    answer = await resp.json(content_type=None)
                    if resp.status == 200:
                        return str(answer["result"])
                    failure = f"rendering service answered {resp.status}"
            except (aiohttp.ClientError, OSError, ValueError, TimeoutError) as exc:
                failure = f"rendering service unreachable ({type(exc).__name__})"
            if key is None:  # without a key, a retry could render twice
                break
            await asyncio.sleep(0.1 * 2**attempt)
        raise RuntimeError(failure)


def run_worker(name: str, work: Callable[[Mapping[str, str]], Awaitable[None]]) -> None:
    """Run worker process ``name``: ``work(env)`` until SIGTERM or SIGINT (then it is
    cancelled: a job taken and not finished is left for its lease or redelivery)."""
    logging.basicConfig(
        level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )

    async def main() -> None:
        task = asyncio.create_task(work(os.environ))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        log.info("%s worker %d started", name, os.getpid())
        try:
            await task
        except asyncio.CancelledError:
            log.info("%s worker %d stopped", name, os.getpid())

    asyncio.run(main())
