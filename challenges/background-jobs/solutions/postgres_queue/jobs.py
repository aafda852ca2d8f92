"""The jobs table both processes of the postgres_queue design share."""

from __future__ import annotations

import asyncio

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from challenges.service import warn_throttled

LEASE_S = 3.0  # a job taken and not done within this is taken again (its worker died)
SCHEMA = """
CREATE TABLE IF NOT EXISTS pq_jobs (
    id          text PRIMARY KEY,
    key         text NOT NULL UNIQUE,
    input       text NOT NULL,
    status      text NOT NULL DEFAULT 'queued',
    result      text,
    lease_until timestamptz,
    attempts    integer NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS pq_jobs_waiting ON pq_jobs (created_at) WHERE status <> 'done'
"""


def pool(url: str, name: str, size: int) -> AsyncConnectionPool:
    return AsyncConnectionPool(
        url,
        min_size=1,
        max_size=size,
        open=False,
        timeout=2.0,
        kwargs={"autocommit": True, "connect_timeout": 2},
        name=name,
    )


async def ensure_schema(pool: AsyncConnectionPool) -> None:
    """Create the table; the web and the workers start at once, so a race is retried."""
    while True:
        try:
            async with pool.connection() as conn:
                await conn.execute(SCHEMA)
            return
        except (psycopg.Error, PoolTimeout) as exc:
            warn_throttled("schema", f"cannot create the table yet: {type(exc).__name__}")
            await asyncio.sleep(0.2)
