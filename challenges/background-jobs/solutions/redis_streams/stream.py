"""The keys both processes of the redis_streams design share."""

from __future__ import annotations

from collections.abc import Mapping

import redis.asyncio as aioredis

from challenges.service import redis_tls

STREAM = "rs:jobs"
GROUP = "workers"
IDEMPOTENCY_TTL_S = 24 * 3600


def job_key(job_id: str) -> str:
    return f"rs:job:{job_id}"


def client(env: Mapping[str, str]) -> aioredis.Redis:
    return aioredis.from_url(
        env["REDIS_URL"],
        decode_responses=True,
        socket_timeout=2.0,
        socket_connect_timeout=2.0,
        **redis_tls(env),
    )
