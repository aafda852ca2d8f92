"""Schedules (APScheduler 3, persistent job store): daily posts, contests, the reaper."""

from bot.scheduler.operations import Operations

__all__ = ["Operations"]
