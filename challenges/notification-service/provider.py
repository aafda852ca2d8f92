"""The notification provider this challenge's environments get as ``PROVIDER_URL``.

``POST /v1/send`` with ``Authorization: Bearer {PROVIDER_TOKEN}`` and a body holding
``idempotency_key`` (the event_id), ``user_id``, ``event_id``, ``channel`` and ``message``.
The grader scripts it (429, 5xx, slow answers, outages) and reads its record of calls.
"""

from grading.provider import Endpoint, main

SEND = Endpoint(
    "POST",
    "/v1/send",
    required=("idempotency_key", "user_id", "event_id", "channel", "message"),
    key="idempotency_key",
)

if __name__ == "__main__":
    main([SEND])
