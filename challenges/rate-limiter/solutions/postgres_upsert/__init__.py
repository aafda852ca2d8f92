"""Rate-limiter reference design: a sliding-window counter in PostgreSQL, one upsert per check.

See ``__main__`` for the design and its price; run it with
``python -m challenges.rate-limiter.solutions.postgres_upsert --port N``.
"""
