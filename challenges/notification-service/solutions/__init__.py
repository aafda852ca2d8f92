"""Reference designs of the notification-service challenge.

* ``sync_delivery``: deliver inside the request (PostgreSQL claim, bounded retries);
  a 202 means "delivered", and the provider's slowness and outages reach the caller.
* ``queue_worker``: store the event in a JetStream work queue and answer 202 at once;
  a worker delivers with retries and backoff, deduplicated in PostgreSQL.

Run one with ``python -m challenges.notification-service.solutions.<name> --port N``
and the connection bundle in the environment. ``contract`` holds the HTTP contract and
the provider client both share; ``stream`` the JetStream hand-off.
"""
