"""Reference designs of the rate-limiter challenge.

* ``redis_lua``: a fixed window kept in Redis, decided by one Lua script.
* ``postgres_upsert``: a sliding-window counter kept in PostgreSQL, decided
  by one ``INSERT ... ON CONFLICT DO UPDATE``.

Run one with ``python -m challenges.rate-limiter.solutions.<name> --port N``
and the connection bundle in the environment. ``contract`` holds the HTTP
contract both answer identically.
"""
