"""Grades an idempotent checkout: contract, duplicates, retries under load and faults, charges."""

from __future__ import annotations

import json
import secrets
from collections import Counter, defaultdict
from typing import Any, NamedTuple

from challenges.schema import ChallengeSpec
from grading import JSON_HEADERS, json_object, poll_until, races, with_retries
from grading.http import Exchange
from grading.load import LoadPlan, Request, Response
from grading.provider import Window
from grading.report import Status
from grading.scenario import Grade
from grading.standard import BadInput, StandardScenario

PATH = "/v1/checkout"
CONCURRENT = 10  # requests fired at once with one key…
RACE_WINDOW_S, MAX_TWINS = 0.005, 6  # …on fresh keys, until a race 5 ms wide would show
RETRY_SHARE = 0.2  # of load requests retry an order first sent RETRY_GAP_S earlier
RETRY_GAP_S = (0.3, 2.0)  # a client's timeout, then its retry
PROVIDER_FAULTS = (  # the fault run's provider: late answers (charged, the caller gave up), 503s
    Window(1.2, 2.0, "slow", 0.5, delay_ms=2500),
    Window(4.0, 4.8, "error", 0.5, status=503),
)
MAX_KEY, MAX_ORDER_ID = 255, 64  # the contract's longest valid key and order_id
SETTLE_LIMIT_S = 10.0  # after the load, the grader retries unanswered orders this long
VERIFIED = {  # check id -> "title: what its failures are"
    "payments.settled-after-retry": "Unanswered orders settle on a retry: orders still unanswered",
    "payments.replayed": "A retried key gets one payment_id: retried keys got several payment_ids",
    "payments.no-double-charge": "No order is charged twice: orders charged more than once",
    "payments.no-lost-charge": "A 2xx means charged and recorded: payments missing either",
}


def contract_answer(ex: Exchange) -> bool:
    """201 with a payment, or 409 (its first still in flight): what the contract answers."""
    return ex.status == 409 or (ex.status == 201 and "payment_id" in (json_object(ex) or {}))


class Order(NamedTuple):
    key: str
    order_id: str
    body: dict[str, Any]  # {"order_id", "amount_cents", "currency"}

    def request(self, **change: Any) -> dict[str, Any]:
        return {"json": self.body | change, "headers": {"Idempotency-Key": self.key}}

    def load_request(self) -> Request:
        headers = (*JSON_HEADERS, ("Idempotency-Key", self.key))
        return Request("POST", PATH, json.dumps(self.body).encode(), headers, tag=self.key)

    def payment(self, payment_id: object) -> dict[str, Any]:
        return {"payment_id": payment_id, **self.body, "status": "charged"}


class PaymentsScenario(StandardScenario):
    # fmt: off
    checks = (
        "contract.healthz", "contract.checkout", "contract.replay", "contract.key-reuse",
        "contract.payment", "contract.bad-input", "accuracy.concurrent", "load.latency",
        "load.errors", "faults.recovery", "faults.availability", "payments.settled-after-retry",
        "payments.replayed", "payments.no-double-charge", "payments.no-lost-charge")
    # fmt: on
    unit = "checkouts"

    def __init__(self, spec: ChallengeSpec) -> None:
        super().__init__(spec)
        self.nonce = secrets.token_hex(4)  # fresh keys and orders on every grade
        self.orders: dict[str, Order] = {}  # key -> every order the grader sent
        self.paid: defaultdict[str, list[str]] = defaultdict(list)  # key -> 2xx payment_ids

    def new_order(self, g: Grade, *, widths: tuple[int, int] = (0, 0)) -> Order:
        """A fresh order; ``widths`` pads its key and order_id to those lengths (the limits)."""
        key, order_id = (
            f"{kind}-{self.nonce}-{len(self.orders)}-".ljust(width, kind[0])
            for kind, width in (("key", widths[0]), ("order", widths[1]))
        )
        amount, currency = g.rng.randint(100, 50_000), g.rng.choice(("EUR", "USD", "GBP"))
        body = {"order_id": order_id, "amount_cents": amount, "currency": currency}
        return self.orders.setdefault(key, Order(key, order_id, body))

    def answered(self, key: str, answer: Exchange | Response | None) -> None:
        body = json_object(answer) if answer is not None and answer.status in (200, 201) else None
        if isinstance(paid := (body or {}).get("payment_id"), str):
            self.paid[key].append(paid)

    async def send(self, g: Grade, orders: list[Order]) -> list[Exchange]:
        """POST every order at once (the client's connections bound it); record the answers."""
        answers = await g.burst([("POST", PATH, o.request()) for o in orders])
        for order, ex in zip(orders, answers, strict=True):
            self.answered(order.key, ex)
        return answers

    async def charges(self) -> tuple[Counter[str], set[str]]:
        """(order_id -> its real charges at the provider: accepted, not replays of a key; the
        order_ids charged another amount or currency than the order's)."""
        calls = [c for c in (await self.provider.calls() if self.provider else []) if c.delivered]
        bodies = {o.order_id: o.body for o in self.orders.values()}
        wrong = {
            str(c.body.get("order_id"))
            for c in calls
            if (order := bodies.get(str(c.body.get("order_id"))))
            and (c.body.get("amount"), c.body.get("currency"))
            != (order["amount_cents"], order["currency"])
        }
        return Counter(str(c.body.get("order_id")) for c in calls), wrong

    async def cases(self, g: Grade) -> None:
        first, twin = self.new_order(g), self.new_order(g)
        widest = self.new_order(g, widths=(MAX_KEY, MAX_ORDER_ID))  # valid, at the limits
        ex, again = [(await self.send(g, [first]))[0] for _ in "12"]  # one after the other
        (wide,) = await self.send(g, [widest])
        pid = (data := json_object(ex) or {}).get("payment_id")
        ok = isinstance(pid, str) and first.payment(pid).items() <= data.items()
        limits = f"a {MAX_KEY}-character key and {MAX_ORDER_ID}-character order_id"
        wide_ok = wide.status == 201 and bool(self.paid[widest.key])
        title = f"A checkout is answered 201 with its payment, with {limits} too"
        want = f"201 {first.payment('…')}, also with {limits}"
        shown = ex if not (ok and ex.status == 201) else wide
        g.check(
            "contract.checkout",
            title,
            ok and ex.status == 201 and wide_ok,
            exchange=shown,
            expected=want,
        )
        title = "The same key and body again replays the first answer: 201, the same body"
        ok = ok and again.status == 201 and json_object(again) == data
        g.check("contract.replay", title, ok, exchange=again, expected=f"201 {data}")
        other = await g.request("POST", PATH, **first.request(amount_cents=1))
        title = "The same key with another body gets 422"
        g.check("contract.key-reuse", title, other.status == 422, exchange=other, expected="422")
        unknown = await g.request("GET", f"/v1/payments/pay-{self.nonce}-unknown")
        title = "GET /v1/payments/<id> of an unknown payment gets 404 (known ones: verified below)"
        g.check("contract.payment", title, unknown.status == 404, exchange=unknown, expected="404")
        statuses: Counter[int] = Counter()
        charged = ids = 0

        async def burst(n: int) -> tuple[bool, list[float]]:  # a check-then-act race shows?
            nonlocal charged, ids
            order = twin if n == 0 else self.new_order(g)
            calls = {order.key: [("POST", PATH, order.request())] * CONCURRENT}
            got, chances = await races.trials(g, calls, RACE_WINDOW_S, contract_answer)
            for ex in got[order.key]:
                self.answered(order.key, ex)
            statuses.update(ex.status for ex in got[order.key])
            charged = max(charged, (await self.charges())[0][order.order_id])
            ids = max(ids, len(set(self.paid[order.key])))
            return charged > 1 or ids > 1, chances

        twins = MAX_TWINS if self.provider else 1  # no record of charges: nothing to judge
        found = await races.search(burst, window_s=RACE_WINDOW_S, max_bursts=twins, budget_s=10)
        g.metric("payments.concurrent_charges", charged if self.provider else None)
        g.metric("accuracy.concurrent.miss_probability", found.miss_metric)
        title = f"{CONCURRENT} requests at once with one key: one charge"
        if self.provider is None:  # graded without an environment: no record of charges to read
            g.check("accuracy.concurrent", title, Status.SKIP, detail="graded without its provider")
            return
        g.check(
            "accuracy.concurrent",
            title,
            charged == 1 and ids == 1 and set(statuses) <= {201, 409},
            detail=f"{found.bursts} orders: at most {charged} charges and {ids} payment_ids for "
            f"one, answers {dict(statuses)}; {found.sentence()}",
            expected="1 charge at the provider; each answer 201 with one payment_id, or 409",
            actual=f"{charged} charges, {ids} payment_ids, answers {dict(statuses)}",
        )

    def bad_inputs(self, g: Grade) -> list[BadInput]:
        key = {"Idempotency-Key": f"bad-{self.nonce}"}

        def bad(label: str, headers: dict[str, str] = key, **change: Any) -> BadInput:
            body = {"order_id": f"bad-{self.nonce}-{label}", "amount_cents": 500, "currency": "EUR"}
            return BadInput(label, "POST", PATH, json=body | change, headers=headers)

        return [
            bad("no Idempotency-Key", {}),
            bad("empty Idempotency-Key", {"Idempotency-Key": ""}),
            bad("Idempotency-Key of 256 characters", {"Idempotency-Key": "k" * (MAX_KEY + 1)}),
            BadInput("body not JSON", "POST", PATH, body=b"order_id=x", headers=key),
            bad("order_id null", order_id=None),
            bad("order_id of 65 chars", order_id="o" * (MAX_ORDER_ID + 1)),
            bad("amount_cents 0", amount_cents=0),
            bad("amount_cents 5.5", amount_cents=5.5),
            bad("amount_cents a string", amount_cents="500"),
            bad("currency XYZ", currency="XYZ"),
        ]

    def traffic(self, g: Grade, segment: str, duration_s: float) -> LoadPlan:
        """New orders at the graded rate; RETRY_SHARE retry an order sent 0.3–2 s earlier."""
        rate = self.spec.grading.rate
        plan = with_retries(
            g.rng,
            lambda: self.new_order(g),
            rate=rate,
            duration_s=duration_s,
            share=RETRY_SHARE,
            gap_s=RETRY_GAP_S,
        )

        def classify(_req: Request, resp: Response) -> str | None:
            """201 with a payment, or 409 (a duplicate while its first is in flight: the
            contract's answer, retried later)."""
            if resp.status == 409:
                return None
            good = isinstance((json_object(resp) or {}).get("payment_id"), str)
            return f"http_{resp.status}" if resp.status != 201 else None if good else "wrong_body"

        plan_of = [o.load_request() for o in plan].__getitem__
        return LoadPlan(rate, duration_s, plan_of, classify=classify, on_result=self.on_result)

    def on_result(self, _i: int, req: Request, resp: Response | None, *_: float) -> None:
        """The load's answers (``LoadPlan.on_result``); a request's tag is its key."""
        self.answered(req.tag, resp)

    async def alongside(self, g: Grade, segment: str, duration_s: float) -> None:
        """In the fault run the provider answers half the charges 2.5 s late (charged, unknown to a
        service that gave up: as a crash between charge and record), later half of them 503."""
        if segment == "faults" and self.provider is not None:
            await self.provider.script(PROVIDER_FAULTS, g.seed)

    async def verify(self, g: Grade) -> None:
        unsettled = [o for o in self.orders.values() if not self.paid[o.key]]

        async def retry() -> list[str]:  # every order the load left without a 2xx, again
            await self.send(g, [o for o in unsettled if not self.paid[o.key]])
            return [o.order_id for o in unsettled if not self.paid[o.key]]

        left, _ = await poll_until(retry, lambda left: not left, limit_s=SETTLE_LIMIT_S, every_s=1)
        charges, wrong = await self.charges()
        retried = [k for k, ids in self.paid.items() if len(ids) > 1]
        # every payment_id answered (a retry's too): each must be charged right and recorded
        acked = [(o, p) for o in self.orders.values() for p in dict.fromkeys(self.paid[o.key])]
        reads = await g.burst([("GET", f"/v1/payments/{p}", {}) for _, p in acked])
        lost = []
        for (o, p), r in zip(acked, reads, strict=True):
            recorded = r.status == 200 and o.payment(p).items() <= (json_object(r) or {}).items()
            if not (charges[o.order_id] and recorded) or o.order_id in wrong:
                why = "another amount" if o.order_id in wrong else f"{charges[o.order_id]} charges"
                lost.append(f"{o.order_id}: {p}, {why}, GET {r.status}")
        mismatched = [f"{k}: {self.paid[k]}" for k in retried if len(set(self.paid[k])) > 1]
        twice = [f"{k}: {n} charges" for k, n in charges.items() if n > 1]
        g.metric("payments.retried", len(retried))
        g.metric("payments.acknowledged", len(acked))
        for check_id, metric, bad, of in (
            ("payments.settled-after-retry", "payments.unsettled", left, len(unsettled)),
            ("payments.replayed", "payments.replay_mismatch", mismatched, len(retried)),
            ("payments.no-double-charge", "payments.double_charged", twice, len(self.orders)),
            ("payments.no-lost-charge", "payments.lost", lost, len(acked)),
        ):
            title, what = VERIFIED[check_id].split(": ")
            g.metric(metric, len(bad))
            if self.provider is None:  # graded without an environment: no record of charges to read
                g.check(check_id, title, Status.SKIP, detail="graded without its provider")
            else:
                detail = f"{len(bad)} of {of} {what}"
                g.check(check_id, title, not bad, detail=detail, evidence={"examples": bad[:5]})
