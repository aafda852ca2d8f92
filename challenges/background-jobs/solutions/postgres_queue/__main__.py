"""Background jobs, reference design "postgres_queue": a jobs table in PostgreSQL.

Store: PostgreSQL only (``DATABASE_URL``). ``POST /v1/jobs`` is one statement,
``INSERT … ON CONFLICT (key) DO NOTHING``: the client's key is unique, so a retry finds the
first job (and answers it, or ``422`` for another input) instead of making a second. The answer
leaves as soon as the row is committed: a few milliseconds, whatever the work costs.

Workers (``worker.py``, two processes of four slots each) claim the oldest waiting job with
``UPDATE … WHERE id = (SELECT … FOR UPDATE SKIP LOCKED LIMIT 1)``: two workers never take one
job, and none waits on another's lock. A claim is a lease of three seconds; a job whose worker
died mid-render is waiting again once its lease expires, and another worker takes it. That is
at-least-once: the second run renders with the job's id as the rendering service's key, which
replays the first render instead of billing a second.

The price: idle workers poll (every 100 ms per slot), a dead worker's job waits out its lease,
and the queue is a table that needs its done rows cleaned up some day.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import psycopg
from aiohttp import web
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from challenges.service import add_health_check, run, warn_throttled

from .. import contract
from . import jobs

NAME = "background-jobs/postgres_queue"
SUBMIT = """
INSERT INTO pq_jobs (id, key, input) VALUES (%s, %s, %s)
ON CONFLICT (key) DO NOTHING RETURNING id, status, result
"""
BY_KEY = "SELECT id, status, result, input FROM pq_jobs WHERE key = %s"
BY_ID = "SELECT id, status, result FROM pq_jobs WHERE id = %s"


class Queue:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def submit(self, s: contract.Submitted) -> dict[str, Any]:
        try:
            async with self.pool.connection() as conn:
                row = await (
                    await conn.execute(SUBMIT, (contract.new_job_id(), s.key, s.input))
                ).fetchone()
                if row is None:  # a retry: the first job with this key
                    *row, first_input = await (await conn.execute(BY_KEY, (s.key,))).fetchone()
                    if first_input != s.input:
                        raise contract.Refused(
                            422, "this Idempotency-Key was used with another input"
                        )
        except (psycopg.Error, PoolTimeout) as exc:
            warn_throttled("submit", f"database unavailable: {type(exc).__name__}")
            raise contract.Refused(503, "database unavailable; retry with the same key") from None
        return contract.job(*row)

    async def read(self, job_id: str) -> dict[str, Any] | None:
        try:
            async with self.pool.connection() as conn:
                row = await (await conn.execute(BY_ID, (job_id,))).fetchone()
        except (psycopg.Error, PoolTimeout):
            raise contract.Refused(503, "database unavailable") from None
        return None if row is None else contract.job(*row)

    async def health(self) -> None:
        async with self.pool.connection() as conn:
            await conn.execute("SELECT 1")


def build(env: Mapping[str, str]) -> web.Application:
    pool = jobs.pool(env["DATABASE_URL"], "jobs-web", 16)
    queue = Queue(pool)
    app = contract.build_app(queue.submit, queue.read)
    add_health_check(app, "postgres", queue.health)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await pool.open(wait=False)
        await jobs.ensure_schema(pool)
        yield
        await pool.close()

    app.cleanup_ctx.append(lifecycle)
    return app


if __name__ == "__main__":
    run(NAME, build, required_env=["DATABASE_URL"])
