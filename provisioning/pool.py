"""A warm pool: environments made ahead of time, handed out instead of a cold create.

The pool keeps ``size`` idle environments per resource set (the resources and
the provider module of a spec). An idle member belongs to ``POOL_OWNER``; its
credentials were made fresh at creation and were never handed to anybody, so
handing it out only rewrites its metadata — owner, label, parameters (e.g.
``RATE_LIMIT``, which are bundle variables, not server settings), creation
time and expiry — and the pool refills in the background. Docker labels are
immutable: a handed-out container keeps its creation-time ``cruscible.expires``
label; the metadata is what the reaper reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from provisioning.backend import Backend
from provisioning.environment import Environment
from provisioning.spec import EnvironmentSpec

log = logging.getLogger(__name__)

POOL_OWNER = "cruscible:pool"
POOL_TTL = timedelta(hours=8)  # idle members are reaped, and replaced, after this
RETRY_AFTER = 5.0  # seconds between failed refills

Key = tuple[tuple[str, ...], str]


def pool_key(spec: EnvironmentSpec) -> Key:
    """What makes two specs interchangeable for the pool: the resources and provider module."""
    return tuple(sorted(r.value for r in spec.resources)), spec.provider_module


def is_pool_member(env: Environment) -> bool:
    return env.owner == POOL_OWNER


class WarmPool:
    """Keeps ``size`` idle environments per resource set asked for (``size`` 0: off)."""

    def __init__(
        self,
        backend: Backend,
        size: int,
        new_id: Callable[[], str],
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        check_health: bool = True,
    ) -> None:
        self.backend = backend
        self.size = max(0, size)
        self.new_id = new_id
        self.clock = clock
        self.check_health = check_health
        self._specs: dict[Key, EnvironmentSpec] = {}
        self._idle: dict[Key, list[str]] = {}
        self._making: dict[Key, int] = {}
        self._fillers: dict[Key, asyncio.Task[None]] = {}

    def members(self) -> set[str]:
        """Ids of the idle environments the pool holds."""
        return {env_id for ids in self._idle.values() for env_id in ids}

    def warm(self, spec: EnvironmentSpec) -> None:
        """Start keeping environments like ``spec`` ready (no-op when the pool is off)."""
        if self.size == 0:
            return
        key = pool_key(spec)
        if key not in self._specs:
            self._specs[key] = EnvironmentSpec(
                resources=spec.resources,
                owner=POOL_OWNER,
                ttl=POOL_TTL,
                label="pool",
                provider_module=spec.provider_module,
            )
            self._idle[key] = []
            self._making[key] = 0
        task = self._fillers.get(key)
        if task is None or task.done():
            self._fillers[key] = asyncio.create_task(self._fill(key))

    async def wait_full(self) -> None:
        """Wait until every resource set asked for has its idle environments."""
        if self._fillers:
            await asyncio.wait(list(self._fillers.values()))

    async def _fill(self, key: Key) -> None:
        spec = self._specs[key]
        while len(self._idle[key]) + self._making[key] < self.size:
            self._making[key] += 1
            try:
                env = await self.backend.create(self.new_id(), spec)
            except Exception as exc:  # a failed refill must not kill the pool
                log.warning("warm pool: could not make an environment: %s", exc)
                await asyncio.sleep(RETRY_AFTER)
                continue
            finally:
                self._making[key] -= 1
            self._idle[key].append(env.id)

    async def _usable(self, env_id: str) -> Environment | None:
        env = await self.backend.get(env_id)
        if env is None or not is_pool_member(env):
            return None
        if self.check_health and not all(h.ok for h in await self.backend.health(env_id)):
            log.warning("warm pool: %s is unhealthy; destroying it", env_id)
            await self.backend.destroy(env_id)
            return None
        return env

    async def take(self, spec: EnvironmentSpec) -> Environment | None:
        """An idle environment made ready for ``spec`` (then refill), or None if none is idle."""
        if self.size == 0:
            return None
        key = pool_key(spec)
        try:
            while self._idle.get(key):
                env = await self._usable(self._idle[key].pop(0))
                if env is None:
                    continue
                now = self.clock()
                env.owner, env.label = spec.owner, spec.label
                env.parameters = dict(spec.parameters)
                env.created_at, env.expires_at = now, now + spec.ttl
                await self.backend.save(env)
                log.info("warm pool: handed out %s", env.id)
                return env
            return None
        finally:
            self.warm(spec)  # the refill starts once this hand-out has returned

    async def close(self) -> None:
        """Stop refilling and destroy the idle environments."""
        for task in self._fillers.values():
            task.cancel()
        for task in self._fillers.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._fillers.clear()
        for env_id in self.members():
            await self.backend.destroy(env_id)
        for ids in self._idle.values():
            ids.clear()
