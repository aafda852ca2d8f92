"""Persistence: SQLAlchemy 2 (async), SQLite by default, PostgreSQL by URL; Alembic migrations."""

from bot.store.db import Store
from bot.store.models import (
    Community,
    Contest,
    DailyPost,
    EnvironmentRecord,
    LeaderboardMessage,
    Publication,
    Submission,
    User,
)

__all__ = [
    "Community",
    "Contest",
    "DailyPost",
    "EnvironmentRecord",
    "LeaderboardMessage",
    "Publication",
    "Store",
    "Submission",
    "User",
]
