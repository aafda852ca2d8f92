"""The links table in PostgreSQL, the source of truth for both reference designs.

One row per link, keyed by its code (the primary key, so a redirect is one index
lookup). Statements run in autocommit through a small fixed-size pool (a connection
handshake in the middle of a burst would stall every request queued behind it);
psycopg prepares them after a few uses, so a lookup is one round trip of an already
planned statement.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import psycopg
from aiohttp import web
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from challenges.service import StoreUnavailable, warn_throttled

CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS links (
    code       text PRIMARY KEY,
    url        text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
)
"""
INSERT = "INSERT INTO links (code, url) VALUES (%s, %s) ON CONFLICT (code) DO NOTHING"
SELECT = "SELECT url FROM links WHERE code = %s"
UPDATE = "UPDATE links SET url = %s, updated_at = now() WHERE code = %s"
DELETE = "DELETE FROM links WHERE code = %s"


class PostgresLinks:
    def __init__(self, dsn: str, *, timeout_s: float, size: int = 8) -> None:
        self.pool = AsyncConnectionPool(
            dsn,
            min_size=size,  # all opened at start: growing the pool under load stalls it
            max_size=size,
            open=False,
            timeout=timeout_s,  # waiting for a free connection
            kwargs={"autocommit": True, "connect_timeout": 2},
            name="url-shortener",
        )
        self.ready = asyncio.Event()

    async def _execute(self, sql: str, params: tuple[str, ...]) -> tuple[int, tuple | None]:
        """(rows affected, first row) of one statement."""
        if not self.ready.is_set():
            raise StoreUnavailable("schema not ready")
        try:
            async with self.pool.connection() as conn:
                cur = await conn.execute(sql, params)
                return cur.rowcount, (await cur.fetchone() if cur.description else None)
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise StoreUnavailable(str(exc)) from exc

    async def create(self, code: str, url: str) -> bool:
        return (await self._execute(INSERT, (code, url)))[0] == 1

    async def resolve(self, code: str) -> str | None:
        row = (await self._execute(SELECT, (code,)))[1]
        return None if row is None else row[0]

    async def update(self, code: str, url: str) -> bool:
        return (await self._execute(UPDATE, (url, code)))[0] == 1

    async def delete(self, code: str) -> bool:
        return (await self._execute(DELETE, (code,)))[0] == 1

    async def ensure_schema(self) -> None:
        """Create the table, retrying until PostgreSQL answers."""
        while True:
            try:
                async with self.pool.connection() as conn:
                    await conn.execute(CREATE_TABLE)
                self.ready.set()
                return
            except (psycopg.Error, PoolTimeout) as exc:
                warn_throttled("schema", f"cannot create the table yet: {type(exc).__name__}")
                await asyncio.sleep(0.5)

    async def health(self) -> None:
        await self._execute("SELECT 1", ())

    async def lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        """An ``app.cleanup_ctx`` entry: open the pool and create the table; close on exit."""
        await self.pool.open(wait=False)
        schema = asyncio.create_task(self.ensure_schema())
        yield
        schema.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await schema
        await self.pool.close(timeout=1.0)
