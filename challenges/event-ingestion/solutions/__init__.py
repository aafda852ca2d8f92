"""Reference designs of the event-ingestion challenge.

* ``postgres_exact``: one row per event (primary key on event_id), stats by query.
* ``redis_counters``: a sorted set per site and path in Redis (``ZADD NX`` dedupes),
  stats by ``ZCOUNT``.

Run one with ``python -m challenges.event-ingestion.solutions.<name> --port N`` and the
connection bundle in the environment. ``contract`` holds the HTTP contract both share.
"""
