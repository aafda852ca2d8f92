"""The time source of schedules, contests, streaks and limits; tests pass their own."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]  # returns an aware datetime


def utcnow() -> datetime:
    return datetime.now(UTC)
