"""Event-ingestion reference design: sorted sets in Redis, one Lua script per batch.

See ``__main__`` for the design and its price; run it with
``python -m challenges.event-ingestion.solutions.redis_counters --port N``.
"""
