"""Faults the grader may inject into an environment's resources, or into the processes of a
hosted submission (named ``process:<name>``, :func:`process_target`)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class FaultAction(StrEnum):
    PAUSE = "pause"  # SIGSTOP: connections hang, nothing is refused
    RESUME = "resume"  # undo pause
    KILL = "kill"  # SIGKILL; stays down until START
    START = "start"  # start a killed resource again, data kept
    RESTART = "restart"  # stop and start, data kept
    RESTART_LOSE_DATA = "restart-lose-data"  # kill and start empty (non-durable resources)


PROCESS_PREFIX = "process:"  # a fault's target naming a process of a hosted submission


def process_target(target: str) -> str | None:
    """The process name a fault target ``process:<name>`` names, or ``None`` for a resource."""
    return target.removeprefix(PROCESS_PREFIX) if target.startswith(PROCESS_PREFIX) else None


@dataclass(frozen=True)
class FaultRecord:
    """When a fault was asked for and when it had taken effect (wall-clock epoch seconds)."""

    env_id: str
    resource: str
    action: FaultAction
    requested_at: float
    effective_at: float
    detail: str = ""
