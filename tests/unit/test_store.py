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
