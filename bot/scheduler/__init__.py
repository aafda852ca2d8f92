"""Schedules (APScheduler 3): daily posts, contests, the reaper; each firing made once across
replicas (``bot.core.firings``)."""

from bot.scheduler.operations import Operations

__all__ = ["Operations"]
