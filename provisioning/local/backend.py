"""LocalBackend: every environment is a directory of real server processes on loopback ports."""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import re
import shutil
import time
from dataclasses import replace
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

from provisioning.backend import ProvisioningError, ResourceHealth
from provisioning.environment import Environment, ResourceInfo
from provisioning.faults import FaultAction, FaultRecord
from provisioning.local import layout
from provisioning.local.driver import Driver, NotReady, Slot
from provisioning.local.ports import PortPool
from provisioning.local.runtime import ProcessRuntime, Runtime, State
from provisioning.local.users import run_as_for, service_user
from provisioning.spec import EnvironmentSpec, Resource
from provisioning.tls import Exposure

log = logging.getLogger(__name__)
_DESTROY_SWEEPS = 5

METADATA = "environment.json"
IN_USE = ".in-use"  # shared-locked by the process that made the environment, while it runs
_ENV_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_START_ATTEMPTS = 3


class _PortTaken(Exception):
    """The server could not bind a leased port: a foreign process took it."""


def _check_id(env_id: str) -> str:
    if not _ENV_ID.match(env_id):
        raise ProvisioningError(f"invalid environment id {env_id!r}")
    return env_id


def _redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


class LocalBackend:
    """Real PostgreSQL, Valkey, SeaweedFS and NATS processes under ``data_dir``.

    ``state_dir`` is the directory given; ``data_dir`` is where the servers' side lives: the
    same directory, or a root-owned runtime directory when we are root and the service user
    cannot reach it (see :mod:`provisioning.local.layout`).
    """

    name = "local"

    def __init__(
        self,
        data_dir: Path,
        port_range: tuple[int, int] = (20000, 29999),
        *,
        ready_timeout: float = 30.0,
        exposure: Exposure | None = None,
    ) -> None:
        self.state_dir = Path(data_dir).resolve()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        # As root, servers run as the service user: their side of the state may live in a
        # runtime directory that user can reach (see provisioning.local.layout).
        self.data_dir = layout.make_traversable(layout.server_dir(self.state_dir, service_user()))
        self.envs_dir = layout.make_traversable(self.data_dir / "envs")
        self.run_as = run_as_for(self.envs_dir)
        self.ready_timeout = ready_timeout
        self.exposure = exposure  # None: loopback, plain text (see provisioning.tls)
        self.ports = PortPool(self.data_dir / "ports", port_range, self._exists)
        self.runtimes = self._make_runtimes()
        self._held: dict[str, int] = {}  # env id -> descriptor holding its in-use lock

    @cached_property
    def drivers(self) -> dict[Resource, Driver]:
        """One driver per kind; imported on first use (they bring the servers' client
        libraries, which listing environments does not need)."""
        from provisioning.local.nats import NatsDriver
        from provisioning.local.postgres import PostgresDriver
        from provisioning.local.provider import ProviderDriver
        from provisioning.local.seaweed import SeaweedDriver
        from provisioning.local.valkey import ValkeyDriver

        return {
            Resource.POSTGRES: PostgresDriver(self.data_dir / "templates"),
            Resource.REDIS: ValkeyDriver(),
            Resource.S3: SeaweedDriver(),
            Resource.QUEUE: NatsDriver(),
            Resource.PROVIDER: ProviderDriver(),
        }

    # -- paths and metadata -------------------------------------------------

    def _env_dir(self, env_id: str) -> Path:
        return self.envs_dir / _check_id(env_id)

    def _exists(self, env_id: str) -> bool:
        return bool(_ENV_ID.match(env_id)) and (self.envs_dir / env_id).is_dir()

    def _slot(self, env_id: str, kind: Resource) -> Slot:
        return Slot(env_id, self._env_dir(env_id) / kind.value, self.run_as, exposure=self.exposure)

    def _write(self, env: Environment) -> None:
        path = self._env_dir(env.id) / METADATA
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(env.to_dict(), f, indent=2)
        os.replace(tmp, path)

    def _read(self, env_id: str) -> Environment | None:
        try:
            return Environment.from_dict(json.loads((self._env_dir(env_id) / METADATA).read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _hold(self, env_id: str) -> None:
        """Mark ``env_id`` in use by this process until it is destroyed or the backend closed:
        a shared ``flock`` on ``<env dir>/.in-use``, which the kernel drops when the process
        ends, killed or not (https://man7.org/linux/man-pages/man2/flock.2.html)."""
        fd = os.open(self._env_dir(env_id) / IN_USE, os.O_RDONLY | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_SH)
        self._held[env_id] = fd

    def _release(self, env_id: str) -> None:
        fd = self._held.pop(env_id, None)
        if fd is not None:
            os.close(fd)

    async def in_use(self, env_id: str) -> bool:
        if env_id in self._held:  # ours: this process decides about it
            return False
        try:
            fd = os.open(self._env_dir(env_id) / IN_USE, os.O_RDONLY)
        except OSError:  # no lock file: made before locks existed, or half removed
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # also drops the exclusive lock if we got it
        return False

    def _stub(self, env_dir: Path) -> Environment:
        """An environment whose metadata is missing or broken (a crash mid-create)."""
        when = datetime.fromtimestamp(env_dir.stat().st_mtime, UTC)
        return Environment(env_dir.name, "", self.name, "incomplete", when, when, {})

    # -- servers ----------------------------------------------------------------

    def _make_runtimes(self) -> dict[Resource, Runtime]:
        """Which runtime runs each kind: here, every server is a local process."""
        runtime = ProcessRuntime(self.data_dir, self.run_as, Resource)
        return dict.fromkeys(Resource, runtime)

    def _distinct_runtimes(self) -> list[Runtime]:
        return list({id(r): r for r in self.runtimes.values()}.values())

    async def _stop(self, env_id: str, kind: Resource, info: ResourceInfo) -> None:
        """Stop cleanly (the driver persists what it must first); SIGKILL if that hangs."""
        driver, runtime = self.drivers[kind], self.runtimes[kind]
        await runtime.resume(env_id, kind)
        if await runtime.state(env_id, kind) is State.STOPPED:
            return
        try:
            await driver.prepare_stop(info)
        except NotReady as exc:
            raise ProvisioningError(
                f"{kind.value} could not persist its data before stopping: {exc}"
            ) from None
        if not await runtime.terminate(env_id, kind, driver.stop_signal):
            log.warning("%s of %s did not stop in time; killing it", kind.value, env_id)
        await runtime.kill(env_id, kind)

    async def _start(
        self, env: Environment, kind: Resource, info: ResourceInfo, *, first: bool, fresh: bool
    ) -> None:
        """Run the server and return once its probe passed (bootstrapping it on ``first``)."""
        env_id = env.id
        driver, slot, runtime = self.drivers[kind], self._slot(env_id, kind), self.runtimes[kind]
        await runtime.start(
            env_id, kind, driver, slot, info, fresh=fresh, expires_at=env.expires_at
        )
        started = time.monotonic()
        deadline = started + self.ready_timeout
        last = "no answer yet"
        while True:
            code = await runtime.exit_code(env_id, kind)
            if code is not None:
                tail = _redact(await runtime.log_tail(env_id, kind, slot), info.secrets)
                if "address already in use" in tail.lower():
                    raise _PortTaken(tail)
                raise ProvisioningError(
                    f"{kind.value} exited with code {code} before it was ready; "
                    f"last lines of its log:\n{tail}"
                )
            try:
                if first:
                    await driver.bootstrap(slot, info)
                    first = False
                await driver.probe(slot, info, min(2.0, max(0.2, deadline - time.monotonic())))
                break
            except NotReady as exc:
                last = _redact(str(exc), info.secrets)
            if time.monotonic() >= deadline:
                await runtime.kill(env_id, kind)
                tail = _redact(await runtime.log_tail(env_id, kind, slot), info.secrets)
                raise ProvisioningError(
                    f"{kind.value} was not ready after {self.ready_timeout:.0f}s ({last}); "
                    f"last lines of its log:\n{tail}"
                )
            await asyncio.sleep(0.02)
        await driver.after_start(slot, info)
        log.info(
            "%s: %s ready on port %d in %.2fs",
            env_id,
            kind.value,
            info.port,
            time.monotonic() - started,
        )

    async def _create_resource(
        self, env: Environment, kind: Resource, spec: EnvironmentSpec
    ) -> ResourceInfo:
        env_id, driver = env.id, self.drivers[kind]
        options = {"module": spec.provider_module} if kind == Resource.PROVIDER else {}
        slot = replace(self._slot(env_id, kind), options=options)
        slot.home.mkdir(mode=0o700)
        self.run_as.own(slot.home)
        avoid: set[int] = set()
        for _ in range(_START_ATTEMPTS):
            names = driver.ports_for(slot)
            ports = self.ports.allocate(env_id, len(names), frozenset(avoid))
            info = await asyncio.to_thread(
                driver.configure, slot, dict(zip(names, ports, strict=True))
            )
            try:
                await self._start(env, kind, info, first=True, fresh=True)
                return info
            except _PortTaken:
                log.warning(
                    "%s: a port leased for %s was taken by another process; retrying",
                    env_id,
                    kind.value,
                )
                await self.runtimes[kind].kill(env_id, kind)
                self.ports.release(env_id, ports)
                avoid.update(ports)
        raise ProvisioningError(
            f"{kind.value}: ports kept being taken by other processes; giving up"
        )

    # -- the Backend protocol -------------------------------------------------

    async def create(self, env_id: str, spec: EnvironmentSpec) -> Environment:
        if not spec.resources:
            raise ProvisioningError("an environment needs at least one resource")
        env_dir = self._env_dir(env_id)
        if self.exposure is not None:
            await asyncio.to_thread(self.exposure.renew)
        try:
            env_dir.mkdir(mode=layout.TRAVERSABLE)
        except FileExistsError:
            raise ProvisioningError(f"environment {env_id} already exists") from None
        env_dir.chmod(layout.TRAVERSABLE)  # whatever the umask: the service user goes through
        self._hold(env_id)
        started = time.monotonic()
        now = datetime.now(UTC)
        env = Environment(
            env_id,
            spec.owner,
            self.name,
            spec.label,
            now,
            now + spec.ttl,
            {},
            dict(spec.parameters),
        )
        try:
            self._write(env)
            kinds = list(dict.fromkeys(spec.resources))
            results = await asyncio.gather(
                *(self._create_resource(env, k, spec) for k in kinds), return_exceptions=True
            )
            failures = [r for r in results if isinstance(r, BaseException)]
            if failures:
                raise failures[0]
            env.resources = dict(zip(kinds, results, strict=True))  # type: ignore[arg-type]
            self._write(env)
        except BaseException as exc:
            await asyncio.shield(self.destroy(env_id))
            if isinstance(exc, ProvisioningError | asyncio.CancelledError):
                raise
            raise ProvisioningError(
                f"could not create {env_id}: {type(exc).__name__}: {exc}"
            ) from exc
        log.info(
            "%s ready in %.2fs (%s)",
            env_id,
            time.monotonic() - started,
            ", ".join(k.value for k in kinds),
        )
        return env

    async def destroy(self, env_id: str) -> None:
        env_dir = self._env_dir(env_id)
        # A process a crashed creator was still starting may write into the directory after
        # the first sweep: sweep again (bounded) until nothing of the environment is left.
        for _ in range(_DESTROY_SWEEPS):
            for runtime in self._distinct_runtimes():
                await runtime.remove(env_id)
            for kind, driver in self.drivers.items():
                driver.cleanup(self._slot(env_id, kind))
            if env_dir.exists():
                await asyncio.to_thread(shutil.rmtree, env_dir, True)
            await asyncio.sleep(0.1)
            if not env_dir.exists():
                break
        self.ports.release(env_id)
        self._release(env_id)
        log.info("%s destroyed", env_id)

    async def get(self, env_id: str) -> Environment | None:
        return self._read(env_id) if self._exists(env_id) else None

    async def list(self) -> list[Environment]:
        await self._collect_orphans()
        out = []
        for env_dir in sorted(self.envs_dir.iterdir()):
            if env_dir.is_dir() and _ENV_ID.match(env_dir.name):
                out.append(self._read(env_dir.name) or self._stub(env_dir))
        return out

    async def save(self, env: Environment) -> None:
        if not self._exists(env.id):
            raise ProvisioningError(f"no environment {env.id!r}")
        self._write(env)

    async def fault(self, env_id: str, resource: Resource, action: FaultAction) -> FaultRecord:
        env = await self.get(env_id)
        if env is None or resource not in env.resources:
            raise ProvisioningError(f"{env_id} has no {resource.value}")
        requested = time.time()
        detail = await self._apply(env, resource, FaultAction(action))
        log.info("%s: %s %s took effect", env_id, resource.value, action)
        return FaultRecord(
            env_id, resource.value, FaultAction(action), requested, time.time(), detail
        )

    async def _apply(self, env: Environment, kind: Resource, action: FaultAction) -> str:
        env_id, info, runtime = env.id, env.resources[kind], self.runtimes[kind]
        running = await runtime.state(env_id, kind) is not State.STOPPED
        if action in (FaultAction.PAUSE, FaultAction.RESUME) and not running:
            raise ProvisioningError(f"{kind.value} of {env_id} is not running")
        if action is FaultAction.PAUSE:
            return await runtime.pause(env_id, kind)
        if action is FaultAction.RESUME:
            return await runtime.resume(env_id, kind)
        if action is FaultAction.KILL:
            killed = await runtime.kill(env_id, kind)
            return f"killed {killed} process(es)" if running else "was not running"
        if action is FaultAction.START:
            if running:
                return "already running"
            await self._start(env, kind, info, first=False, fresh=False)
            return "started, data kept"
        if action is FaultAction.RESTART:
            await self._stop(env_id, kind, info)
            await self._start(env, kind, info, first=False, fresh=False)
            return "restarted, data kept"
        if self.drivers[kind].durable:
            raise ProvisioningError(
                f"{kind.value} is durable: restart-lose-data does not apply to it"
            )
        await runtime.kill(env_id, kind)
        await asyncio.to_thread(self.drivers[kind].wipe, self._slot(env_id, kind))
        await self._start(env, kind, info, first=False, fresh=True)
        return "restarted empty"

    async def health(self, env_id: str) -> list[ResourceHealth]:
        env = await self.get(env_id)
        if env is None:
            raise ProvisioningError(f"no environment {env_id!r}")
        states: dict[Resource, State] = {}
        for runtime in self._distinct_runtimes():
            states.update(await runtime.states(env_id))
        return list(
            await asyncio.gather(
                *(
                    self._health(env_id, k, i, states.get(k, State.STOPPED))
                    for k, i in env.resources.items()
                )
            )
        )

    async def _health(
        self, env_id: str, kind: Resource, info: ResourceInfo, state: State
    ) -> ResourceHealth:
        if state is not State.RUNNING:
            paused = state is State.PAUSED
            return ResourceHealth(
                kind,
                False,
                "paused" if paused else "not running",
                "paused" if paused else "stopped",
            )
        try:
            detail = await self.drivers[kind].probe(self._slot(env_id, kind), info, 2.0)
        except NotReady as exc:
            return ResourceHealth(kind, False, _redact(str(exc), info.secrets))
        return ResourceHealth(kind, True, detail)

    async def close(self) -> None:
        """Forget handles on servers; the environments keep running."""
        for env_id in list(self._held):
            self._release(env_id)
        for runtime in self._distinct_runtimes():
            await runtime.close()

    async def _collect_orphans(self) -> None:
        """Remove servers whose environment directory is gone; drop stale leases."""
        for runtime in self._distinct_runtimes():
            await runtime.collect(self._exists)
        self.ports.collect()
