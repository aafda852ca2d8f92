"""Where a resource's server runs: the seam between a backend and processes or containers.

A backend configures resources, probes them and applies faults through the
drivers; a runtime only starts, signals and finds the servers. The ``local``
backend runs every resource as a process (``ProcessRuntime``); the ``docker``
backend runs servers in containers and the provider as a process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from datetime import datetime
from enum import StrEnum
from pathlib import Path

from provisioning.backend import ProvisioningError
from provisioning.environment import ResourceInfo
from provisioning.local import processes
from provisioning.local.driver import Driver, Slot
from provisioning.local.users import RunAs
from provisioning.spec import Resource

log = logging.getLogger(__name__)


class State(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"


class Runtime(ABC):
    """Starts, stops, pauses and finds the servers of the resource kinds it is given."""

    @abstractmethod
    async def start(
        self,
        env_id: str,
        kind: Resource,
        driver: Driver,
        slot: Slot,
        info: ResourceInfo,
        *,
        fresh: bool,
        expires_at: datetime,
    ) -> None:
        """Launch the server; ``fresh`` asks for a new instance rather than the stopped one."""

    @abstractmethod
    async def exit_code(self, env_id: str, kind: Resource) -> int | None:
        """The exit code of the last start once it has exited; None while it runs."""

    @abstractmethod
    async def log_tail(self, env_id: str, kind: Resource, slot: Slot) -> str: ...

    @abstractmethod
    async def state(self, env_id: str, kind: Resource) -> State: ...

    @abstractmethod
    async def states(self, env_id: str) -> dict[Resource, State]:
        """The state of every server of ``env_id`` this runtime has (one look for all)."""

    @abstractmethod
    async def pause(self, env_id: str, kind: Resource) -> str:
        """Freeze the server (connections hang); return what was done."""

    @abstractmethod
    async def resume(self, env_id: str, kind: Resource) -> str:
        """Undo ``pause``; a no-op when not paused."""

    @abstractmethod
    async def terminate(self, env_id: str, kind: Resource, sig: signal.Signals) -> bool:
        """Ask the server to exit with ``sig``; True if it did within the grace period."""

    @abstractmethod
    async def kill(self, env_id: str, kind: Resource | None = None) -> int:
        """SIGKILL the server(s) and wait until gone; return how many were running."""

    @abstractmethod
    async def remove(self, env_id: str) -> None:
        """Kill and forget everything of ``env_id`` (before its directory is deleted)."""

    @abstractmethod
    async def collect(self, alive: Callable[[str], bool]) -> None:
        """Remove servers whose environment no longer exists."""

    async def close(self) -> None:  # noqa: B027
        """Release the runtime's own handles; the servers keep running."""


def _state_of(procs: list[processes.Marked]) -> State:
    found = processes.states(procs)
    if not found:
        return State.STOPPED
    return State.PAUSED if "T" in found else State.RUNNING


class ProcessRuntime(Runtime):
    """Servers as process groups marked with the environment (see ``processes``)."""

    def __init__(self, data_dir: Path, run_as: RunAs, kinds: Iterable[Resource]) -> None:
        self.data_dir = data_dir
        self.run_as = run_as
        self.kinds = frozenset(k.value for k in kinds)
        self._children: dict[tuple[str, Resource], subprocess.Popen[bytes]] = {}

    def _marked(self, env_id: str | None, kind: Resource | None = None) -> list[processes.Marked]:
        return [
            m
            for m in processes.scan(self.data_dir)
            if m.resource in self.kinds
            and (env_id is None or m.env_id == env_id)
            and (kind is None or m.resource == kind.value)
        ]

    def _reap(self, env_id: str) -> None:
        for key in [k for k in self._children if k[0] == env_id]:
            if self._children[key].poll() is not None:
                del self._children[key]

    def _main_pid(self, env_id: str, kind: Resource) -> int | None:
        proc = self._children.get((env_id, kind))
        if proc is not None and proc.poll() is None:
            return proc.pid
        leaders = [m.pid for m in self._marked(env_id, kind) if m.pid == m.pgid]
        return leaders[0] if leaders else None

    async def start(
        self,
        env_id: str,
        kind: Resource,
        driver: Driver,
        slot: Slot,
        info: ResourceInfo,
        *,
        fresh: bool,
        expires_at: datetime,
    ) -> None:
        proc = processes.spawn(
            driver.argv(slot, info),
            cwd=slot.home,
            log_path=slot.log_path,
            data_dir=self.data_dir,
            env_id=env_id,
            resource=kind.value,
            run_as=self.run_as if driver.runs_as_service_user(slot) else RunAs(),
            extra_env=driver.environment(slot, info),
        )
        self._children[(env_id, kind)] = proc

    async def exit_code(self, env_id: str, kind: Resource) -> int | None:
        proc = self._children.get((env_id, kind))
        return None if proc is None else proc.poll()

    async def log_tail(self, env_id: str, kind: Resource, slot: Slot) -> str:
        return processes.log_tail(slot.log_path)

    async def state(self, env_id: str, kind: Resource) -> State:
        return _state_of(self._marked(env_id, kind))

    async def states(self, env_id: str) -> dict[Resource, State]:
        procs = self._marked(env_id)
        return {
            Resource(kind): _state_of([m for m in procs if m.resource == kind])
            for kind in {m.resource for m in procs}
        }

    async def pause(self, env_id: str, kind: Resource) -> str:
        procs = self._marked(env_id, kind)
        processes.signal_groups(procs, signal.SIGSTOP)
        await processes.wait_until(
            lambda: all(s == "T" for s in processes.states(self._marked(env_id, kind))), 5.0
        )
        return f"stopped {len(procs)} process(es)"

    async def resume(self, env_id: str, kind: Resource) -> str:
        procs = self._marked(env_id, kind)
        processes.signal_groups(procs, signal.SIGCONT)
        await processes.wait_until(
            lambda: "T" not in processes.states(self._marked(env_id, kind)), 5.0
        )
        return f"continued {len(procs)} process(es)"

    async def terminate(self, env_id: str, kind: Resource, sig: signal.Signals) -> bool:
        pid = self._main_pid(env_id, kind)
        if pid is None:
            return True
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        return await processes.wait_until(lambda: not self._marked(env_id, kind), 15.0)

    async def kill(self, env_id: str, kind: Resource | None = None) -> int:
        count = len(self._marked(env_id, kind))
        for _ in range(3):
            procs = self._marked(env_id, kind)
            if not procs:
                break
            processes.signal_groups(procs, signal.SIGKILL)
            await processes.wait_until(lambda: not self._marked(env_id, kind), 5.0)
        self._reap(env_id)
        if self._marked(env_id, kind):
            raise ProvisioningError(f"could not kill the processes of {env_id}")
        return count

    async def remove(self, env_id: str) -> None:
        await self.kill(env_id)

    async def collect(self, alive: Callable[[str], bool]) -> None:
        procs = self._marked(None)
        for env_id in {m.env_id for m in procs}:
            if not alive(env_id):
                log.warning("killing orphaned processes of vanished environment %s", env_id)
                processes.signal_groups([m for m in procs if m.env_id == env_id], signal.SIGKILL)

    async def close(self) -> None:
        for proc in self._children.values():
            proc.poll()
        self._children.clear()
