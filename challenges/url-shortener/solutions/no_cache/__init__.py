"""URL-shortener reference design: PostgreSQL only, a primary-key lookup per redirect.

See ``__main__`` for the design and its price; run it with
``python -m challenges.url-shortener.solutions.no_cache --port N``.
"""
