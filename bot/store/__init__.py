"""Persistence: SQLAlchemy 2 (async), SQLite by default, PostgreSQL by URL; Alembic migrations."""

from bot.store.db import Store
from bot.store.models import EnvironmentRecord, Submission, User

__all__ = ["EnvironmentRecord", "Store", "Submission", "User"]
