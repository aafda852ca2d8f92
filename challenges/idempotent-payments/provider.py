"""The payment provider this challenge's environments get as ``PROVIDER_URL``.

``POST /v1/charges`` with ``Authorization: Bearer {PROVIDER_TOKEN}``, an optional
``Idempotency-Key`` header and a body holding ``amount`` (integer, minor units), ``currency``
and ``order_id``: every accepted call without a key, or with a key not seen before, is a
real charge. A key is honoured as Stripe documents it
(https://docs.stripe.com/api/idempotent_requests, see ``grading.provider``): the same key
and body again replays the first answer (same charge ``id``), another body gets ``422``,
a call while the first with its key is still being answered gets ``409``.
The grader reads its record of calls to count the charges each order really got.
"""

from grading.provider import Endpoint, main

CHARGES = Endpoint("POST", "/v1/charges", required=("amount", "currency", "order_id"))

if __name__ == "__main__":
    main([CHARGES])
