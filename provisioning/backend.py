"""The interface every provisioning backend implements (local processes, docker)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from provisioning.environment import Environment
from provisioning.faults import FaultAction, FaultRecord
from provisioning.spec import EnvironmentSpec, Resource


class ProvisioningError(RuntimeError):
    """A clear, user-facing reason why an environment could not be made or changed."""


@dataclass(frozen=True)
class ResourceHealth:
    """``state``: ``"running"`` (then ``ok`` says whether it answered), ``"paused"`` or
    ``"stopped"`` (a fault left it so)."""

    resource: Resource
    ok: bool
    detail: str
    state: str = "running"


@runtime_checkable
class Backend(Protocol):
    name: str

    async def create(self, env_id: str, spec: EnvironmentSpec) -> Environment:
        """Start every resource of ``spec``; return once each answered an authenticated request."""

    async def destroy(self, env_id: str) -> None:
        """Stop and remove everything of ``env_id``; idempotent."""

    async def get(self, env_id: str) -> Environment | None: ...

    async def list(self) -> list[Environment]:
        """Every environment this backend holds, whether or not anybody still knows it."""

    async def save(self, env: Environment) -> None:
        """Persist changed metadata (e.g. a new expiry)."""

    async def fault(self, env_id: str, resource: Resource, action: FaultAction) -> FaultRecord:
        """Inject ``action`` into one resource; return when it took effect."""

    async def health(self, env_id: str) -> list[ResourceHealth]: ...

    async def in_use(self, env_id: str) -> bool:
        """Whether another live process is creating ``env_id``, or made it and still runs: such
        an environment may be missing from the store for a moment, and is not an orphan."""

    async def close(self) -> None:
        """Release the backend's own resources (not the environments)."""
