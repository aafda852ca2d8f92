"""Event ingestion, reference design "postgres_exact": one row per event, stats by query.

Store: PostgreSQL only (``DATABASE_URL``). ``POST /v1/events`` inserts the whole batch
in one statement — ``INSERT … SELECT FROM unnest(…) ON CONFLICT (event_id) DO
NOTHING`` — and answers 202 once it committed. The primary key on event_id is the
dedupe: a retried batch, or one that overlaps an earlier one, inserts only what is new,
so a count is never doubled, whatever the client resends and however long after.
``GET /v1/stats`` is a ``count(*) … GROUP BY path`` over an index on (site, ts): it
sees every committed event at once (freshness is the commit), exactly.

The price: every event is a row and two index entries, written through the WAL before
the 202 — at a million events a day about 200 MB of table and index a day, kept until
something deletes it — and a stats query scans every event of its window, so a window
of a month is millions of rows (a production design adds a per-minute rollup and keeps
raw events for the recent past only). The database is on the request path: while it
is paused or restarting the service answers 503 after :data:`DEADLINE_S` and the client
must resend; the resend is harmless, thanks to the primary key.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping

import psycopg
from aiohttp import web
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from challenges.service import StoreUnavailable, add_health_check, run, warn_throttled

from .. import contract

NAME = "event-ingestion/postgres_exact"
DEADLINE_S = 1.0
SCHEMA = """
CREATE TABLE IF NOT EXISTS ingest_events (
    event_id text PRIMARY KEY,
    site     text NOT NULL,
    path     text NOT NULL,
    ts       bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS ingest_events_site_ts ON ingest_events (site, ts);
"""
INSERT = """
INSERT INTO ingest_events (event_id, site, path, ts)
SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::bigint[])
ON CONFLICT (event_id) DO NOTHING
"""
STATS = """
SELECT path, count(*) FROM ingest_events
WHERE site = %s AND ts >= %s AND ts < %s
GROUP BY path
"""


class PostgresStore:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool
        self.ready = asyncio.Event()

    async def ensure_schema(self) -> None:
        while True:
            try:
                async with self.pool.connection() as conn:
                    await conn.execute(SCHEMA)
                self.ready.set()
                return
            except (psycopg.Error, PoolTimeout) as exc:
                warn_throttled("schema", f"cannot create the table yet: {type(exc).__name__}")
                await asyncio.sleep(0.5)

    async def ingest(self, events: list[contract.Event]) -> None:
        if not self.ready.is_set():
            raise StoreUnavailable("schema not ready")
        # A batch may hold one event_id twice; ON CONFLICT cannot touch a row twice.
        unique = list({e.event_id: e for e in events}.values())
        columns = (
            [e.event_id for e in unique],
            [e.site for e in unique],
            [e.path for e in unique],
            [e.ts for e in unique],
        )
        async with self.pool.connection() as conn:
            await conn.execute(INSERT, columns)

    async def stats(self, window: contract.Window) -> dict[str, int]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(STATS, (window.site, window.start, window.end))
            return {path: n for path, n in await cur.fetchall()}

    async def health(self) -> None:
        if not self.ready.is_set():
            raise StoreUnavailable("schema not ready")
        async with self.pool.connection() as conn:
            await conn.execute("SELECT 1")


def build(env: Mapping[str, str]) -> web.Application:
    pool = AsyncConnectionPool(
        env["DATABASE_URL"],
        min_size=4,
        max_size=16,
        open=False,
        timeout=DEADLINE_S,
        kwargs={"autocommit": True, "connect_timeout": 2},
        name="ingest",
    )
    store = PostgresStore(pool)
    app = contract.build_app(
        store, deadline_s=DEADLINE_S, errors=(psycopg.OperationalError, PoolTimeout)
    )
    add_health_check(app, "postgres", store.health)

    async def postgres(app: web.Application) -> AsyncIterator[None]:
        await pool.open(wait=False)
        schema = asyncio.create_task(store.ensure_schema())
        yield
        schema.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await schema
        await pool.close(timeout=1.0)

    app.cleanup_ctx.append(postgres)
    return app


def main() -> None:
    run(NAME, build, required_env=["DATABASE_URL"])


if __name__ == "__main__":
    main()
