"""URL-shortener reference design: a Redis cache in front of PostgreSQL, invalidated on write.

See ``__main__`` for the design and its price; run it with
``python -m challenges.url-shortener.solutions.cache_aside --port N``.
"""
