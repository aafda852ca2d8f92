"""The idempotent-payments contract, shared by this challenge's reference designs.

``POST /v1/checkout`` with header ``Idempotency-Key`` (1..255 printable ASCII characters, the
bound Stripe documents: https://docs.stripe.com/api/idempotent_requests) and
``{"order_id": str, "amount_cents": int, "currency": "EUR"|"USD"|"GBP"}`` answers
``201 {"payment_id", "order_id", "amount_cents", "currency", "status": "charged"}``; a retry
replays that answer; ``422`` for a key reused with another body, ``409`` for a key still in
flight (IETF draft "The Idempotency-Key HTTP Header Field", section 2.6:
https://datatracker.ietf.org/doc/draft-ietf-httpapi-idempotency-key-header/), ``400`` for a
bad request, ``503`` when it cannot be done now. ``GET /v1/payments/<id>`` reads a payment.

:class:`ProviderClient` charges with the client's key as the provider's idempotency key, so a
charge retried after any failure is the same charge. Where the key lives is each design's own.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from challenges.service import Invalid, Refused, idempotency_key, json_error, json_object

MAX_KEY_LENGTH = 255
MAX_ORDER_ID_LENGTH = 64
MAX_AMOUNT_CENTS = 100_000_000
CURRENCIES = ("EUR", "USD", "GBP")
CHARGE_TIMEOUT_S = 1.0  # one call to the provider
CHARGE_ATTEMPTS = 3  # a 5xx or a dropped call did not charge: try again, same key


@dataclass(frozen=True, slots=True)
class Checkout:
    key: str
    order_id: str
    amount_cents: int
    currency: str

    @property
    def fingerprint(self) -> str:
        """sha256 of the body's meaning: the same key with another body is refused (422)."""
        canon = json.dumps([self.order_id, self.amount_cents, self.currency])
        return hashlib.sha256(canon.encode()).hexdigest()

    def payment(self, payment_id: str) -> dict[str, Any]:
        """The 201 body (and ``GET /v1/payments/<id>``'s)."""
        return {
            "payment_id": payment_id,
            "order_id": self.order_id,
            "amount_cents": self.amount_cents,
            "currency": self.currency,
            "status": "charged",
        }


def new_payment_id() -> str:
    return "pay_" + secrets.token_hex(12)


def parse(key: str | None, raw: bytes) -> Checkout:
    """Validate the header and the body; :class:`Invalid` says what is wrong."""
    key = idempotency_key(key, MAX_KEY_LENGTH)
    data = json_object(raw)
    order_id, amount, currency = (
        data.get("order_id"),
        data.get("amount_cents"),
        data.get("currency"),
    )
    if not isinstance(order_id, str) or not 1 <= len(order_id) <= MAX_ORDER_ID_LENGTH:
        raise Invalid(f"order_id must be a string of 1..{MAX_ORDER_ID_LENGTH} characters")
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise Invalid("amount_cents must be an integer")
    if not 1 <= amount <= MAX_AMOUNT_CENTS:
        raise Invalid(f"amount_cents must be 1..{MAX_AMOUNT_CENTS}")
    if currency not in CURRENCIES:
        raise Invalid(f"currency must be one of {', '.join(CURRENCIES)}")
    return Checkout(key, order_id, amount, currency)


class ProviderClient:
    """One HTTP session to the payment provider."""

    def __init__(self, url: str, token: str, *, tls: ssl.SSLContext | None = None) -> None:
        self.url = url.rstrip("/") + "/v1/charges"
        self.headers = {"Authorization": f"Bearer {token}"}
        self.tls = tls
        self.session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=256, ssl=self.tls or True), headers=self.headers
        )

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def charge(
        self, c: Checkout, *, idempotent: bool = True, attempts: int = CHARGE_ATTEMPTS
    ) -> str:
        """Charge ``c`` and return the charge id, with the client's key as the provider's
        idempotency key (``idempotent=False``: none, every call a new charge), in up to
        ``attempts`` calls while the provider answers 5xx or drops the call. Raises
        :class:`Refused`: 409/422 as the provider answered, 503 when it could not charge (or
        may have: a timeout), and the client retries with the same key."""
        assert self.session is not None, "open() the client first"
        headers = {"Idempotency-Key": c.key} if idempotent else {}
        body = {"amount": c.amount_cents, "currency": c.currency, "order_id": c.order_id}
        failure = "no attempt"
        for attempt in range(attempts):
            try:
                async with self.session.post(
                    self.url,
                    json=body,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=CHARGE_TIMEOUT_S),
                ) as resp:
                    answer = await resp.json(content_type=None)
                    if resp.status == 200:
                        return str(answer["id"])
                    if resp.status in (409, 422):
                        raise Refused(resp.status, f"provider: {answer.get('error')}")
                    failure = f"provider answered {resp.status}"
            except TimeoutError:
                raise Refused(503, "the provider did not answer; retry with the same key") from None
            except (aiohttp.ClientError, OSError, ValueError) as exc:
                failure = f"provider unreachable ({type(exc).__name__})"
            if not idempotent:  # without a key, a retry could charge twice
                break
            await asyncio.sleep(0.02 * 2**attempt)
        raise Refused(503, failure)


Checkouts = Callable[[Checkout], Awaitable[tuple[int, dict[str, Any]]]]
Payments = Callable[[str], Awaitable[dict[str, Any] | None]]


def build_app(checkout: Checkouts, payment: Payments) -> web.Application:
    """The routes: validate, then let the design ``checkout`` (→ status, body) or read a
    ``payment`` (None: unknown). A design raises :class:`Refused` to refuse."""

    async def post(request: web.Request) -> web.Response:
        try:
            c = parse(request.headers.get("Idempotency-Key"), await request.read())
            status, body = await checkout(c)
        except Invalid as exc:
            return json_error(400, str(exc))
        except Refused as exc:
            return json_error(exc.status, str(exc))
        return web.json_response(body, status=status)

    async def get(request: web.Request) -> web.Response:
        try:
            found = await payment(request.match_info["payment_id"])
        except Refused as exc:
            return json_error(exc.status, str(exc))
        return json_error(404, "no such payment") if found is None else web.json_response(found)

    app = web.Application()
    app.router.add_post("/v1/checkout", post)
    app.router.add_get("/v1/payments/{payment_id}", get)
    return app
