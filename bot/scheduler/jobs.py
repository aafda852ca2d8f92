"""The jobs APScheduler stores by reference (``bot.scheduler.jobs:daily``) with plain
arguments; each finds the running :class:`~bot.scheduler.operations.Operations` by its key."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.scheduler.operations import Operations

log = logging.getLogger(__name__)

_running: dict[str, Operations] = {}


def register(key: str, ops: Operations) -> None:
    _running[key] = ops


def unregister(key: str) -> None:
    _running.pop(key, None)


def _ops(key: str) -> Operations | None:
    ops = _running.get(key)
    if ops is None:
        log.warning("a job of %s ran with no operations running there", key)
    return ops


async def daily(key: str, community_id: int) -> None:
    if ops := _ops(key):
        await ops.daily.run(community_id)


async def contest(key: str, contest_id: int) -> None:
    if ops := _ops(key):
        await ops.coach.contests.advance(contest_id)


async def environments(key: str) -> None:
    """The reaper (each process reaps what its provisioner holds; on the job engine, a
    worker's ``reap`` job), then the expiry warnings (once per tick across replicas)."""
    if ops := _ops(key):
        jobs = getattr(ops.coach.queue, "environments", None)
        await (jobs.reap() if jobs is not None else ops.envs.reap())
        await ops.warn_environments()


async def publications(key: str) -> None:
    """Publish again what a platform refused for a while (see ``bot.core.publish``), once per
    tick across replicas."""
    if ops := _ops(key):
        await ops.retry_publications()


async def firings(key: str) -> None:
    """Scheduled firings whose claimer died, made by this replica (``bot.core.firings``)."""
    if ops := _ops(key):
        await ops.sweep()
