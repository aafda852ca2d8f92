"""Reference designs of the cache-slow-api challenge.

* ``ttl_cache``: Redis cache-aside, entries expire after half the staleness bound; misses of
  one product in this process share one upstream call (single-flight).
* ``refresh_ahead``: entries live longer and a read of an entry past its refresh age answers it
  at once and refreshes it in the background; only an entry past its hard age (below the
  bound) is fetched while the read waits.

Run one with ``python -m challenges.cache-slow-api.solutions.<name> --port N`` and the
connection bundle in the environment. ``contract`` holds what both share: the HTTP contract,
the upstream client and the single-flight.
"""
