"""The simulated provider's protocol, in one place: how it is started, how it is reached.

Both sides use this module: the local backend's driver (``provisioning/local/provider.py``)
starts the provider process and probes it, and the provider itself and the grader's handle
on it (``grading/provider.py``) serve and call these routes. It imports nothing but the
standard library, so ``provisioning`` stays free of the grading engine.

- **Command line**: ``python -m <module> --port N`` (loopback, plain HTTP), plus
  ``--public-host H --public-port P --tls-cert C --tls-key K`` to also serve HTTPS to
  learners elsewhere (:func:`argv`, :func:`parser`).
- **Environment**: the learner's bearer token in :data:`ENV_TOKEN`, the grader's admin token
  in :data:`ENV_ADMIN_TOKEN`: tokens never travel in argv (which ``ps`` shows).
- **Admin API** (loopback only; the public site answers 404 under :data:`ADMIN_PREFIX`),
  every route needing header :data:`ADMIN_HEADER`:

  ``GET /_admin/ping`` → ``{"ok": true, "calls": <int>}`` (:func:`ping_answer`);
  ``PUT /_admin/script`` ``{"windows": [<Window fields>], "seed": <int>}`` →
  ``{"ok": true, "t0": <epoch seconds>}``;
  ``GET /_admin/calls?since=<index>`` → ``{"calls": [<Call fields>]}``;
  ``POST /_admin/reset`` → ``{"ok": true}``;
  ``PUT /_admin/records`` ``{"records": {<request path>: <object> | null}}`` → ``{"ok": true,
  "t": <epoch seconds>}`` (the records a read endpoint serves; null deletes one).
- **Resource info**: the grader reaches it through ``ResourceInfo.admin``'s
  :data:`ADMIN_URL` and :data:`ADMIN_TOKEN` keys.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ENV_URL = "PROVIDER_URL"
ENV_TOKEN = "PROVIDER_TOKEN"
ENV_ADMIN_TOKEN = "PROVIDER_ADMIN_TOKEN"

ADMIN_HEADER = "X-Admin-Token"
ADMIN_PREFIX = "/_admin"
PING = f"{ADMIN_PREFIX}/ping"
SCRIPT = f"{ADMIN_PREFIX}/script"
CALLS = f"{ADMIN_PREFIX}/calls"
RECORDS = f"{ADMIN_PREFIX}/records"
RESET = f"{ADMIN_PREFIX}/reset"
HEALTHZ = "/healthz"

ADMIN_URL = "url"  # keys of ResourceInfo.admin for the provider
ADMIN_TOKEN = "admin_token"


def argv(
    module: str,
    port: int,
    *,
    public: tuple[str, int] | None = None,
    tls: tuple[Path, Path] | None = None,
) -> list[str]:
    """The arguments after the interpreter: ``-m module --port N``, and with ``public``
    (listen host, port) and ``tls`` (certificate, key) the HTTPS site for learners."""
    args = ["-m", module, "--port", str(port)]
    if public is None or tls is None:
        return args
    return [
        *args,
        "--public-host", public[0], "--public-port", str(public[1]),
        "--tls-cert", str(tls[0]), "--tls-key", str(tls[1]),
    ]  # fmt: skip


def parser() -> argparse.ArgumentParser:
    """The provider's command line, as :func:`argv` writes it."""
    p = argparse.ArgumentParser(description="a simulated third-party API")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--public-host", help="also serve HTTPS here (needs --tls-cert/--tls-key)")
    p.add_argument("--public-port", type=int)
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    return p


def parse_args(args: Sequence[str] | None = None) -> argparse.Namespace:
    return parser().parse_args(args)


def ping_answer(calls: int) -> dict[str, Any]:
    """What ``GET /_admin/ping`` answers: alive, and how many calls it has recorded."""
    return {"ok": True, "calls": calls}


def read_ping(data: Any) -> int:
    """The number of calls a ping answer reports; ValueError when ``data`` is not a ping
    answer (something else listens on the port)."""
    if not (isinstance(data, dict) and data.get("ok") is True):
        raise ValueError("not a provider's ping answer")
    calls = data.get("calls", 0)
    return calls if isinstance(calls, int) else 0
