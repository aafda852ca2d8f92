"""Lifecycle over a backend: ids, TTL and extension ceiling, quotas, warm pool, reaping,
reconciliation."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from provisioning.backend import Backend, ProvisioningError, ResourceHealth
from provisioning.environment import Environment
from provisioning.faults import FaultAction, FaultRecord
from provisioning.pool import WarmPool, is_pool_member
from provisioning.spec import EnvironmentSpec, Resource

log = logging.getLogger(__name__)

Teardown = Callable[[], Awaitable[None]]


def new_env_id() -> str:
    return "env-" + secrets.token_hex(3)


class Provisioner:
    def __init__(
        self,
        backend: Backend,
        *,
        max_per_owner: int = 2,
        max_total: int = 50,
        max_ttl: timedelta = timedelta(hours=8),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        pool_size: int = 0,
    ) -> None:
        """``pool_size`` idle environments are kept per resource set asked for (0: no pool);
        they are not counted in the quotas."""
        self.backend = backend
        self.max_per_owner = max_per_owner
        self.max_total = max_total
        self.max_ttl = max_ttl
        self.clock = clock
        self.pool = WarmPool(backend, pool_size, new_env_id, clock=clock)
        self._teardowns: dict[str, list[Teardown]] = {}

    def on_teardown(self, env_id: str, stop: Teardown) -> None:
        """Run ``stop`` before ``env_id`` is torn down by this provisioner (:meth:`down`,
        :meth:`reap`, :meth:`reconcile`) or when it closes: what runs next to the environment
        (a kept hosted submission) ends with it. A failing ``stop`` is logged, never raised."""
        self._teardowns.setdefault(env_id, []).append(stop)

    async def _run_teardowns(self, env_id: str) -> None:
        for stop in self._teardowns.pop(env_id, []):
            try:
                await stop()
            except Exception:
                log.exception("stopping what ran next to %s failed", env_id)

    def warm(self, spec: EnvironmentSpec) -> None:
        """Keep environments like ``spec`` ready in the warm pool (when it is on)."""
        self.pool.warm(spec)

    async def up(self, spec: EnvironmentSpec) -> Environment:
        live = await self.list()
        if len(live) >= self.max_total:
            raise ProvisioningError(
                f"the machine is at its limit of {self.max_total} environments; try again later"
            )
        mine = [e for e in live if e.owner == spec.owner]
        if len(mine) >= self.max_per_owner:
            ids = ", ".join(e.id for e in mine)
            raise ProvisioningError(
                f"you already have {len(mine)} environments ({ids}); the limit is "
                f"{self.max_per_owner} — destroy one first"
            )
        if spec.ttl <= timedelta(0) or spec.ttl > self.max_ttl:
            raise ProvisioningError(f"ttl must be between 1s and {self.max_ttl}")
        return await self.pool.take(spec) or await self.backend.create(new_env_id(), spec)

    async def get(self, env_id: str) -> Environment:
        env = await self.backend.get(env_id)
        if env is None:
            raise ProvisioningError(f"no environment {env_id!r}")
        return env

    async def list(self, owner: str | None = None) -> list[Environment]:
        """Environments handed out (not the warm pool's idle ones), optionally of ``owner``."""
        envs = await self.backend.list()
        return [e for e in envs if not is_pool_member(e) and (owner is None or e.owner == owner)]

    async def extend(self, env_id: str, by: timedelta) -> Environment:
        env = await self.get(env_id)
        ceiling = env.created_at + self.max_ttl
        wanted = max(env.expires_at, self.clock()) + by
        if env.expires_at >= ceiling:
            raise ProvisioningError(
                f"{env_id} is already at its ceiling ({self.max_ttl} after creation)"
            )
        env.expires_at = min(wanted, ceiling)
        await self.backend.save(env)
        return env

    async def down(self, env_id: str) -> None:
        await self.get(env_id)
        await self._run_teardowns(env_id)
        await self.backend.destroy(env_id)

    async def fault(self, env_id: str, resource: Resource, action: FaultAction) -> FaultRecord:
        env = await self.get(env_id)
        if resource not in env.resources:
            raise ProvisioningError(f"{env_id} has no {resource.value}")
        return await self.backend.fault(env_id, resource, action)

    async def health(self, env_id: str) -> list[ResourceHealth]:
        await self.get(env_id)
        return await self.backend.health(env_id)

    async def restore(self, env_id: str) -> list[str]:
        """Bring back what a fault left down — a paused server resumed, a stopped one started,
        data kept — as a grade interrupted mid-fault (its worker killed) leaves it. Returns what
        was done, e.g. ``["redis: resume"]`` (empty when everything runs)."""
        undo = {"paused": FaultAction.RESUME, "stopped": FaultAction.START}
        done = []
        for health in await self.health(env_id):
            action = undo.get(health.state)
            if action is not None:
                await self.backend.fault(env_id, health.resource, action)
                done.append(f"{health.resource.value}: {action.value}")
        return done

    async def reap(self) -> list[str]:
        """Destroy every expired environment; return their ids."""
        now = self.clock()
        gone = []
        for env in await self.backend.list():
            if env.expires_at <= now:
                log.info("reaping expired environment %s", env.id)
                await self._run_teardowns(env.id)
                await self.backend.destroy(env.id)
                gone.append(env.id)
        return gone

    async def reconcile(self, known: set[str]) -> list[str]:
        """Destroy what the backend holds that the caller's store does not know (idle pool
        members of an earlier process included: the pool refills)."""
        gone = []
        keep = known | self.pool.members()
        for env in await self.backend.list():
            if env.id in keep:
                continue
            if await self.backend.in_use(env.id):  # another live process is making it
                log.info("reconciling: %s is not in the store but in use; kept", env.id)
                continue
            log.info("reconciling: tearing down unknown environment %s", env.id)
            await self._run_teardowns(env.id)
            await self.backend.destroy(env.id)
            gone.append(env.id)
        return gone

    async def close(self) -> None:
        """Destroy the warm pool's idle environments; handed-out ones keep running, what runs
        next to them in this process (:meth:`on_teardown`) stops."""
        for env_id in list(self._teardowns):
            await self._run_teardowns(env_id)
        await self.pool.close()
        await self.backend.close()
