"""Rate-limiter reference design: a fixed window in Redis, one Lua script per check.

See ``__main__`` for the design and its price; run it with
``python -m challenges.rate-limiter.solutions.redis_lua --port N``.
"""
