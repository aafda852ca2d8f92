"""A tiny runtime shared by the reference designs of the catalog.

A reference design is an ordinary aiohttp service that reads its connection
bundle from the environment, exactly as a learner's service would. This module
holds the parts every design repeats, so that a design's own module reads like
its decision:

* ``--port`` / ``--host`` on the command line (loopback by default);
* the bundle read from the process environment: a missing required variable
  (or a bad parameter, raised as :class:`ConfigError`) prints one line and
  exits with code 2;
* logging that never prints the bundle (connection URLs carry passwords);
* uvloop, and ``access_log=None`` (a log line per request costs more than a
  rate-limit check);
* ``GET /healthz``: 200 when every store the design registered with
  :func:`add_health_check` answers within :data:`HEALTH_TIMEOUT_S`, else 503;
* a request refused (:class:`Invalid`: 400; :class:`Refused`: another status), and the
  conventions several contracts share: the ``Idempotency-Key`` header
  (:func:`idempotency_key`) and a JSON object body (:func:`json_object`).

It deliberately knows nothing about a challenge's HTTP contract, nor about the
grader or the bot.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import ssl
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, NoReturn

import uvloop
from aiohttp import web

log = logging.getLogger("cruscible.service")

HEALTH_TIMEOUT_S = 1.0
SHUTDOWN_TIMEOUT_S = 2.0

HealthCheck = Callable[[], Awaitable[object]]
AppFactory = Callable[[Mapping[str, str]], web.Application]

HEALTH_CHECKS = web.AppKey("cruscible_health_checks", dict[str, HealthCheck])


class ConfigError(Exception):
    """The bundle is unusable (missing variable, bad parameter): exit code 2."""


class StoreUnavailable(Exception):
    """A store did not answer in time; the design answers 503."""


def env_int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 1) -> int:
    """An integer parameter of the bundle, with its default."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value


def ca_file(env: Mapping[str, str]) -> str | None:
    """The CA file an exposed environment's servers verify against: ``CA_CERT_FILE`` (where
    the learner saved ``CA_CERT_PEM``; libpq reads ``PGSSLROOTCERT`` and boto3
    ``AWS_CA_BUNDLE`` themselves). None for an environment on loopback (plain text)."""
    return env.get("CA_CERT_FILE") or None


def tls_context(env: Mapping[str, str]) -> ssl.SSLContext | None:
    """A client TLS context verifying against the environment's CA (nats-py's ``tls=`` for a
    ``tls://`` ``NATS_URL``, aiohttp's ``ssl=`` for an HTTPS ``PROVIDER_URL``); None when the
    environment gave no CA file (loopback, or a publicly trusted certificate)."""
    found = ca_file(env)
    return ssl.create_default_context(cafile=found) if found else None


def redis_tls(env: Mapping[str, str]) -> dict[str, str]:
    """redis-py keyword arguments for ``REDIS_URL``: ``rediss://`` verified with the
    environment's CA (https://redis.readthedocs.io/en/stable/examples/ssl_connection_examples.html);
    nothing for ``redis://``."""
    found = ca_file(env)
    if env.get("REDIS_URL", "").startswith("rediss://") and found:
        return {"ssl_ca_certs": found}
    return {}


def add_health_check(app: web.Application, name: str, check: HealthCheck) -> None:
    """Register a store probe for ``GET /healthz`` (e.g. a PING, a SELECT 1)."""
    app.setdefault(HEALTH_CHECKS, {})[name] = check


def json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class Invalid(ValueError):
    """The request breaks the contract: answer 400 with this message."""


class Refused(Exception):
    """The request cannot be served: answer ``status`` (409, 422, 503) with the message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def idempotency_key(value: str | None, limit: int = 255) -> str:
    """The ``Idempotency-Key`` header as the catalog's contracts state it: 1..``limit``
    printable ASCII characters (the header: https://datatracker.ietf.org/doc/
    draft-ietf-httpapi-idempotency-key-header/). Raises :class:`Invalid`."""
    if value is None or not 1 <= len(value) <= limit or not value.isprintable():
        raise Invalid(f"Idempotency-Key must be 1..{limit} printable characters")
    if not value.isascii():
        raise Invalid("Idempotency-Key must be ASCII")
    return value


def json_object(raw: bytes) -> dict[str, Any]:
    """A request body that must be a JSON object. Raises :class:`Invalid`."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise Invalid("body must be a JSON object") from None
    if not isinstance(data, dict):
        raise Invalid("body must be a JSON object")
    return data


_last_warning: dict[str, float] = {}


def warn_throttled(topic: str, message: str, *, every_s: float = 5.0) -> None:
    """Log a warning at most once per ``every_s`` per topic (a store outage at
    2,000 requests/s must not become 2,000 log lines/s)."""
    now = time.monotonic()
    if now - _last_warning.get(topic, -every_s) >= every_s:
        _last_warning[topic] = now
        log.warning("%s", message)


async def _healthz(request: web.Request) -> web.Response:
    checks = request.app.get(HEALTH_CHECKS, {})
    failed: list[str] = []

    async def probe(name: str, check: HealthCheck) -> None:
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT_S):
                await check()
        except Exception as exc:  # any failure means "not ready"
            failed.append(name)
            warn_throttled(f"healthz:{name}", f"health check {name} failed: {type(exc).__name__}")

    await asyncio.gather(*(probe(name, check) for name, check in checks.items()))
    if failed:
        return web.json_response({"status": "unavailable", "failed": sorted(failed)}, status=503)
    return web.json_response({"status": "ok"})


def _parse_args(name: str, argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=name, description=f"Reference design {name}.")
    parser.add_argument("--port", type=int, required=True, help="TCP port to listen on")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "INFO"))
    return parser.parse_args(argv)


def _fail(name: str, message: str) -> NoReturn:
    print(f"{name}: {message}", file=sys.stderr)
    raise SystemExit(2)


def run(
    name: str,
    factory: AppFactory,
    *,
    required_env: Sequence[str],
    argv: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> None:
    """Serve the design built by ``factory(env)`` until SIGINT/SIGTERM.

    ``factory`` builds the application: its routes, its store clients (opened
    in ``app.cleanup_ctx`` so that they close on shutdown) and its health
    checks. ``GET /healthz`` is added here.
    """
    args = _parse_args(name, argv)
    env = os.environ if env is None else env
    missing = [var for var in required_env if not env.get(var)]
    if missing:
        _fail(name, f"missing required environment variable(s): {', '.join(missing)}")

    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        app = factory(env)
    except ConfigError as exc:
        _fail(name, str(exc))
    app.router.add_get("/healthz", _healthz)

    log.info("%s listening on http://%s:%d", name, args.host, args.port)
    web.run_app(
        app,
        host=args.host,
        port=args.port,
        access_log=None,
        print=None,
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        loop=uvloop.new_event_loop(),
    )
