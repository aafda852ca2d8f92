"""PostgreSQL (the uploads table) and S3 (the originals), shared by the reference designs.

The table holds one row per upload: its status, its result or error. The original
bytes go to ``S3_BUCKET`` under ``uploads/{id}``. boto3 is synchronous, so every S3
call runs in a worker thread; its timeouts are short and it retries once, so that an
unreachable S3 turns into an error within seconds rather than a hung request.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

import boto3
import psycopg
from aiohttp import web
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from challenges.service import StoreUnavailable, warn_throttled

from .contract import Result, Upload, row_to_upload

CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS uploads (
    id           text PRIMARY KEY,
    status       text NOT NULL,
    size         bigint NOT NULL,
    rows         bigint,
    sha256       text,
    amount_total text,
    error        text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
)
"""
SELECT = "SELECT id, status, rows, sha256, amount_total, error FROM uploads WHERE id = %s"
INSERT = """
INSERT INTO uploads (id, status, size, rows, sha256, amount_total, error)
VALUES (%s, %s, %s, %s, %s, %s, %s)
"""
FINISH = """
UPDATE uploads SET status = %s, rows = %s, sha256 = %s, amount_total = %s, error = %s,
                   updated_at = now()
WHERE id = %s AND status IN ('pending', 'processing')
"""
DEADLINE_S = 2.0


def key(upload_id: str) -> str:
    return f"uploads/{upload_id}"


def outcome(result: Result | None, error: str | None) -> tuple[Any, ...]:
    """(status, rows, sha256, amount_total, error) columns for a finished upload."""
    if result is None:
        return ("failed", None, None, None, error)
    return ("done", result.rows, result.sha256, result.amount_total, None)


class Table:
    def __init__(self, dsn: str) -> None:
        self.pool = AsyncConnectionPool(
            dsn,
            min_size=4,
            max_size=4,
            open=False,
            timeout=DEADLINE_S,
            kwargs={"autocommit": True, "connect_timeout": 2, "row_factory": dict_row},
            name="file-pipeline",
        )
        self.ready = asyncio.Event()

    async def execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        if not self.ready.is_set():
            raise StoreUnavailable("schema not ready")
        try:
            async with self.pool.connection() as conn:
                cur = await conn.execute(sql, params)
                return await cur.fetchall() if cur.description else []
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise StoreUnavailable(str(exc)) from exc

    async def insert(self, upload_id: str, size: int, columns: tuple[Any, ...]) -> None:
        status, rows, sha, total, error = columns
        await self.execute(INSERT, (upload_id, status, size, rows, sha, total, error))

    async def finish(self, upload_id: str, result: Result | None, error: str | None) -> None:
        await self.execute(FINISH, (*outcome(result, error), upload_id))

    async def get(self, upload_id: str) -> Upload | None:
        rows = await self.execute(SELECT, (upload_id,))
        return row_to_upload(rows[0]) if rows else None

    async def health(self) -> None:
        await self.execute("SELECT 1")

    async def lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        """An ``app.cleanup_ctx`` entry: open the pool, create the table, close on exit."""
        await self.pool.open(wait=False)
        while not self.ready.is_set():
            try:
                async with self.pool.connection() as conn:
                    await conn.execute(CREATE_TABLE)
                self.ready.set()
            except (psycopg.Error, PoolTimeout) as exc:
                warn_throttled("schema", f"cannot create the table yet: {type(exc).__name__}")
                await asyncio.sleep(0.5)
        yield
        await self.pool.close(timeout=1.0)


class Bucket:
    """The learner's bucket through boto3, each call in a worker thread."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.name = env["S3_BUCKET"]
        self.client = boto3.client(
            "s3",
            endpoint_url=env["S3_ENDPOINT_URL"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env.get("AWS_REGION") or "us-east-1",
            config=Config(
                connect_timeout=1,
                read_timeout=10,
                retries={"max_attempts": 2, "mode": "standard"},
                s3={"addressing_style": "path"},
                max_pool_connections=16,
            ),
        )

    async def put(self, upload_id: str, data: bytes) -> None:
        try:
            await asyncio.to_thread(
                self.client.put_object, Bucket=self.name, Key=key(upload_id), Body=data
            )
        except (BotoCoreError, ClientError) as exc:
            raise StoreUnavailable(f"S3 put failed: {exc}") from exc

    async def get(self, upload_id: str) -> bytes:
        def read() -> bytes:
            obj = self.client.get_object(Bucket=self.name, Key=key(upload_id))
            with contextlib.closing(obj["Body"]) as body:
                return body.read()

        try:
            return await asyncio.to_thread(read)
        except (BotoCoreError, ClientError) as exc:
            raise StoreUnavailable(f"S3 get failed: {exc}") from exc
