"""Event-ingestion reference design: one PostgreSQL row per event, stats by query.

See ``__main__`` for the design and its price; run it with
``python -m challenges.event-ingestion.solutions.postgres_exact --port N``.
"""
