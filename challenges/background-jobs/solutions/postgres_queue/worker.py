"""The postgres_queue design's worker process: slots that claim a job with a lease, render it
with the job's id as the rendering service's key, and mark it done."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from challenges.service import warn_throttled

from .. import contract
from . import jobs

SLOTS = 4  # jobs one worker process renders at once
IDLE_S = 0.1  # a slot that found nothing waits this long
CLAIM = """
UPDATE pq_jobs SET status = 'running', attempts = attempts + 1,
       lease_until = clock_timestamp() + make_interval(secs => %s)
WHERE id = (
    SELECT id FROM pq_jobs
    WHERE status = 'queued' OR (status = 'running' AND lease_until < clock_timestamp())
    ORDER BY created_at FOR UPDATE SKIP LOCKED LIMIT 1
)
RETURNING id, input
"""
DONE = "UPDATE pq_jobs SET status = 'done', result = %s, lease_until = NULL WHERE id = %s"


async def slot(pool: AsyncConnectionPool, renderer: contract.Renderer) -> None:
    while True:
        try:
            async with pool.connection() as conn:
                claimed = await (await conn.execute(CLAIM, (jobs.LEASE_S,))).fetchone()
            if claimed is None:
                await asyncio.sleep(IDLE_S)
                continue
            job_id, text = claimed
            result = await renderer.render(text, key=job_id)
            async with pool.connection() as conn:
                await conn.execute(DONE, (result, job_id))
        except (psycopg.Error, PoolTimeout, RuntimeError) as exc:  # the lease brings it back
            warn_throttled("worker", f"a job is left for later: {exc}")
            await asyncio.sleep(IDLE_S)


async def work(env: Mapping[str, str]) -> None:
    pool = jobs.pool(env["DATABASE_URL"], "jobs-worker", SLOTS)
    await pool.open(wait=False)
    try:
        await jobs.ensure_schema(pool)
        async with contract.Renderer(env) as renderer:
            await asyncio.gather(*(slot(pool, renderer) for _ in range(SLOTS)))
    finally:
        await pool.close()


if __name__ == "__main__":
    contract.run_worker("postgres_queue", work)
