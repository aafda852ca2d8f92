"""The store: migrations build exactly the models' schema; datetimes come back aware."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from bot.store import Store, User
from bot.store.models import Base


async def test_migrations_match_the_models(tmp_path: Path) -> None:
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    await store.migrate()
    await store.migrate()  # idempotent

    def diff(conn):  # type: ignore[no-untyped-def]
        return compare_metadata(MigrationContext.configure(conn), Base.metadata)

    async with store.engine.connect() as conn:
        assert await conn.run_sync(diff) == []
    await store.close()


async def test_datetimes_round_trip_as_aware_utc(tmp_path: Path) -> None:
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    await store.migrate()
    when = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    async with store.session() as s:
        s.add(User(platform="test", platform_id="1", display_name="ada", created_at=when))
    async with store.session() as s:
        user = await s.get_one(User, 1)
    assert user.created_at == when and user.created_at.tzinfo is not None
    await store.close()


def _row(conn, table: str, **given: object) -> None:  # type: ignore[no-untyped-def]
    """Insert a row into ``table``, filling every required column not ``given``."""
    import sqlalchemy as sa

    values = dict(given)
    for col in sa.inspect(conn).get_columns(table):
        if col["name"] in values or col["nullable"] or col.get("default") is not None:
            continue
        kind = col["type"].python_type
        values[col["name"]] = (
            "2026-11-30 09:00:00" if kind is datetime else 1 if kind in (int, bool) else "x"
        )
    names = ", ".join(values)
    conn.execute(
        sa.text(f"INSERT INTO {table} ({names}) VALUES ({', '.join(':' + k for k in values)})"),
        values,
    )


async def test_a_store_with_published_grades_upgrades(tmp_path: Path) -> None:
    """An installation's store whose publications reference its submissions upgrades in
    place (a batch copy of ``submissions`` would break the reference)."""
    from alembic import command
    from sqlalchemy import text

    from bot.store.db import _alembic_config

    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")

    def at_0004_with_rows(conn) -> None:  # type: ignore[no-untyped-def]
        command.upgrade(_alembic_config(conn), "0004")
        _row(conn, "users", id=1)
        _row(conn, "submissions", id=1, user_id=1, status="done")
        _row(conn, "publications", id=1, submission_id=1)

    async with store.engine.begin() as conn:
        await conn.run_sync(at_0004_with_rows)
    await store.migrate()  # to head, with the reference in place
    async with store.engine.connect() as conn:
        row = (await conn.execute(text("SELECT kind, hosted FROM submissions"))).one()
    assert tuple(row) == ("url", 0)
    await store.close()
