"""Persistence: SQLAlchemy 2 (async), SQLite by default, PostgreSQL by URL; Alembic migrations."""

from bot.store.db import Store
from bot.store.models import Community, DailyPost, EnvironmentRecord, Submission, User

__all__ = ["Community", "DailyPost", "EnvironmentRecord", "Store", "Submission", "User"]
