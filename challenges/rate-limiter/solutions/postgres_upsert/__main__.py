"""Rate limiter, reference design "postgres_upsert": a sliding-window counter in PostgreSQL.

Store: PostgreSQL only (``DATABASE_URL``); it never touches Redis, so a Redis
restart cannot affect it. Algorithm: a sliding-window counter. Time is cut
into fixed windows of ``RATE_WINDOW_SECONDS``; a key's row keeps the count of
the current window and of the previous one, and a check estimates the last
``RATE_WINDOW_SECONDS`` as ``prev × (share of the previous window still in
view) + curr``. It admits when that estimate plus the cost fits the limit.

The decision is one statement, ``INSERT ... ON CONFLICT (key) DO UPDATE``,
run in autocommit as a prepared statement: the first check of a key inserts
its row; later ones take the row lock, roll the windows forward, decide, and
write the result; ``RETURNING`` hands back the row, whose ``granted`` column
says what *this* statement decided. PostgreSQL serialises concurrent upserts
on one key through that row lock and re-evaluates on the latest row version,
so concurrent checks from any number of replicas never over-admit. One round
trip per check. Time is the database server's clock, never the replicas'.

The price of the algorithm: it is an approximation. It assumes the previous
window's requests were spread evenly, so it can admit a little more or less
than an exact sliding log would; in exchange it needs two integers per key
instead of a timestamp per request, and it does not let a client double its
budget across a window boundary the way a fixed window does.

The price of the store: every check is a write and a commit, denials too
(the row keeps the decision so that one statement can report it; PostgreSQL
before 18 cannot ``RETURNING`` the old row). The table is a normal logged one,
so the counters survive a restart; an ``UNLOGGED`` table would skip the WAL
and lose every count on a crash. The sessions run with ``synchronous_commit =
off``: a commit does not wait for its WAL flush, so a slow disk cannot stall
checks; in exchange a crash of PostgreSQL (not a clean restart) may forget
the last fraction of a second of counts, i.e. admit a few extra requests
afterwards. For counters that expire within two windows anyway, that is the
right side of the trade; an audit log would choose the other.
``seen`` is deliberately not indexed, so each update is a HOT update; the
background cleanup (every window, bounded batches, ``SKIP LOCKED``) scans
the table instead, which is cheap at 10,000 keys. While PostgreSQL is down
checks answer ``503`` within a second (fail closed).
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

NAME = "rate-limiter/postgres_upsert"
DEADLINE_S = 1.0
CLEANUP_BATCH = 5_000
CLEANUP_MAX_BATCHES = 20

CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS rl_sliding_window (
    key     text PRIMARY KEY,
    win     bigint NOT NULL,            -- index of the current window: floor(seen / W)
    curr    integer NOT NULL,           -- admitted in window win
    prev    integer NOT NULL,           -- admitted in window win - 1
    seen    double precision NOT NULL,  -- epoch seconds of the latest check
    granted integer NOT NULL            -- what the latest check admitted (0 = denied)
)
"""

# cost <= limit (a larger cost never reaches the store), window in seconds.
# a: the row's time (never backwards) and window; x: the counters rolled
# forward to that window; s: the decision.
CHECK = """
INSERT INTO rl_sliding_window AS r (key, win, curr, prev, seen, granted)
SELECT %(key)s, floor(n.t / %(window)s)::bigint, %(cost)s, 0, n.t, %(cost)s
FROM (SELECT extract(epoch FROM clock_timestamp())::float8 AS t) AS n
ON CONFLICT (key) DO UPDATE SET (win, curr, prev, seen, granted) = (
    SELECT s.w, s.cur + s.g, s.prv, s.t, s.g
    FROM (
        SELECT x.w, x.t, x.cur, x.prv,
               CASE WHEN x.prv * (1 - (x.t - x.w * %(window)s) / %(window)s) + x.cur + %(cost)s <= %(limit)s
                    THEN %(cost)s ELSE 0 END AS g
        FROM (
            SELECT a.t, a.w,
                   CASE WHEN r.win = a.w THEN r.curr ELSE 0 END AS cur,
                   CASE WHEN r.win = a.w THEN r.prev
                        WHEN r.win = a.w - 1 THEN r.curr ELSE 0 END AS prv
            FROM (SELECT GREATEST(r.seen, EXCLUDED.seen) AS t,
                         floor(GREATEST(r.seen, EXCLUDED.seen) / %(window)s)::bigint AS w) AS a
        ) AS x
    ) AS s
)
RETURNING win, curr, prev, seen, granted
"""

# Rows whose both windows have ended hold nothing: deleting one is the same as
# keeping it. SKIP LOCKED: never wait on a key that is being checked right now.
CLEANUP = """
DELETE FROM rl_sliding_window WHERE key IN (
    SELECT key FROM rl_sliding_window
    WHERE seen < extract(epoch FROM clock_timestamp()) - 2 * %(window)s
    LIMIT %(batch)s FOR UPDATE SKIP LOCKED
)
"""


def estimate(curr: int, prev: int, elapsed: float, window_s: int) -> float:
    """Requests counted in the sliding window ``elapsed`` s into the current one."""
    return prev * (1 - elapsed / window_s) + curr


def retry_after_s(
    curr: int, prev: int, elapsed: float, cost: int, limits: contract.Limits
) -> float:
    """How long until ``cost`` fits, if nothing else is admitted meanwhile."""
    limit, window = limits.limit, limits.window_s
    if curr + cost <= limit:
        # Within this window, once enough of the previous one has slid out of view.
        needed = 1 - (limit - cost - curr) / prev
        return needed * window - elapsed
    # In the next window, where this window's count becomes the previous one.
    needed = 1 - (limit - cost) / curr
    return window - elapsed + needed * window


class SlidingWindowLimiter:
    def __init__(self, pool: AsyncConnectionPool, limits: contract.Limits) -> None:
        self.pool = pool
        self.limits = limits
        self.ready = asyncio.Event()
        self.schema_task: asyncio.Task[None] | None = None

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

    async def decide(self, check: contract.Check) -> contract.Decision:
        if not self.ready.is_set():
            raise StoreUnavailable("schema not ready")
        limits = self.limits
        try:
            async with self.pool.connection() as conn:
                cur = await conn.execute(
                    CHECK,
                    {
                        "key": check.key,
                        "cost": check.cost,
                        "window": float(limits.window_s),
                        "limit": limits.limit,
                    },
                )
                row = await cur.fetchone()
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise StoreUnavailable(str(exc)) from exc
        except psycopg.errors.UndefinedTable as exc:
            # The database came back without our table (restored, recreated):
            # create it again rather than answer 500 forever.
            if self.ready.is_set():
                self.ready.clear()
                self.schema_task = asyncio.create_task(self.ensure_schema())
            raise StoreUnavailable("table missing") from exc
        assert row is not None
        win, curr, prev, seen, granted = row
        elapsed = seen - win * limits.window_s
        if granted:
            return contract.Decision.allow(
                limits.limit - estimate(curr, prev, elapsed, limits.window_s)
            )
        return contract.Decision.deny(retry_after_s(curr, prev, elapsed, check.cost, limits))

    async def cleanup_forever(self) -> None:
        """Every window, delete expired rows in bounded batches."""
        await self.ready.wait()
        while True:
            await asyncio.sleep(self.limits.window_s)
            try:
                async with self.pool.connection() as conn:
                    for _ in range(CLEANUP_MAX_BATCHES):
                        cur = await conn.execute(
                            CLEANUP, {"window": self.limits.window_s, "batch": CLEANUP_BATCH}
                        )
                        if cur.rowcount < CLEANUP_BATCH:
                            break
            except (psycopg.Error, PoolTimeout) as exc:
                warn_throttled("cleanup", f"cleanup skipped: {type(exc).__name__}")

    async def health(self) -> None:
        if not self.ready.is_set():
            raise StoreUnavailable("schema not ready")
        async with self.pool.connection() as conn:
            await conn.execute("SELECT 1")


async def configure(conn: psycopg.AsyncConnection) -> None:
    # Do not wait for the WAL flush on commit (see the module docstring).
    await conn.execute("SET synchronous_commit = off")


def build(env: Mapping[str, str]) -> web.Application:
    limits = contract.Limits.from_env(env)
    pool = AsyncConnectionPool(
        env["DATABASE_URL"],
        min_size=4,
        max_size=16,
        open=False,
        timeout=DEADLINE_S,  # waiting for a free connection
        kwargs={"autocommit": True, "prepare_threshold": 0, "connect_timeout": 2},
        configure=configure,
        name="rate-limiter",
    )
    limiter = SlidingWindowLimiter(pool, limits)
    app = contract.build_app(limiter, limits, deadline_s=DEADLINE_S)
    add_health_check(app, "postgres", limiter.health)

    async def postgres(app: web.Application) -> AsyncIterator[None]:
        await pool.open(wait=False)
        limiter.schema_task = asyncio.create_task(limiter.ensure_schema())
        cleanup = asyncio.create_task(limiter.cleanup_forever())
        yield
        for task in (limiter.schema_task, cleanup):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await pool.close(timeout=1.0)

    app.cleanup_ctx.append(postgres)
    return app


def main() -> None:
    run(NAME, build, required_env=["DATABASE_URL"])


if __name__ == "__main__":
    main()
