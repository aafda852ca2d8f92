"""Redis cache-aside with a TTL of half the staleness bound and single-flight misses."""
