"""Persistence: SQLAlchemy 2 (async), SQLite by default, PostgreSQL by URL; Alembic migrations."""

from bot.store.db import Store
from bot.store.models import (
    Community,
    Contest,
    DailyPost,
    EnvironmentRecord,
    LeaderboardMessage,
    Submission,
    User,
)

__all__ = [
    "Community",
    "Contest",
    "DailyPost",
    "EnvironmentRecord",
    "LeaderboardMessage",
    "Store",
    "Submission",
    "User",
]
