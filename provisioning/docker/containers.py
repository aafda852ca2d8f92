"""Servers as labelled docker containers: the docker backend's runtime.

Each resource directory is bind-mounted at the same path inside its container,
so the local drivers' configuration files, command lines and readiness probes
apply unchanged. Containers carry the environment's id, expiry, resource and
backend data directory as labels; that is how they are found again.

Exposed (``slot.exposure``, host network only), a container still serves plain text on
127.0.0.1 and the driver's TLS relay (``provisioning.local.tlsrelay``, without a server of its
own) runs next to it as a host process, marked like the local backend's servers (resource
``<kind>.relay``): it starts before its container and stops with it (kill, stop, restart,
removal), so the public port is open exactly while the server was last started. A pause
freezes the container only: the relay's connections wait on the frozen server.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
import requests
from docker.errors import APIError, NotFound
from docker.models.containers import Container

from provisioning.backend import ProvisioningError
from provisioning.environment import ResourceInfo
from provisioning.local import processes
from provisioning.local.driver import Driver, RelayedDriver, Slot, relay_argv, relay_environment
from provisioning.local.runtime import Runtime, State
from provisioning.local.users import RunAs
from provisioning.spec import Resource

log = logging.getLogger(__name__)

LABEL_ENV = "cruscible.env"
LABEL_EXPIRES = "cruscible.expires"
LABEL_RESOURCE = "cruscible.resource"
LABEL_DATA_DIR = "cruscible.data_dir"
_STATUS = {"running": State.RUNNING, "paused": State.PAUSED}
STOP_GRACE = 15  # seconds docker waits after the stop signal before SIGKILL
RELAY = ".relay"  # the marker resource of a kind's relay process: "<kind>.relay"
RELAY_LOG = "relay.log"
RELAY_BIND_S = 10.0  # how long a relay may take to bind its public port before its server starts
_TCP_LISTEN = "0A"  # a listening socket's state in /proc/net/tcp


def _listening(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds a socket listening on TCP ``port``: its descriptors' socket
    inodes against ``/proc/<pid>/net/tcp`` and ``tcp6``
    (https://docs.kernel.org/networking/proc_net_tcp.html), so a listener of another process
    on the same port does not count."""
    inodes = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        with contextlib.suppress(OSError):
            inodes.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if (
                state == _TCP_LISTEN
                and int(local.rsplit(":", 1)[1], 16) == port
                and f"socket:[{inode}]" in inodes
            ):
                return True
    return False


@dataclass(frozen=True)
class Limits:
    """Per-container resource caps."""

    memory: str = "512m"
    cpus: float = 1.0


class ContainerRuntime(Runtime):
    """One container per (environment, resource), on the host network or a bridge."""

    def __init__(
        self,
        client: docker.DockerClient,
        data_dir: Path,
        images: dict[Resource, str],
        entrypoints: dict[Resource, str],
        *,
        network: str,
        user: str,
        limits: dict[Resource, Limits],
    ) -> None:
        self.client = client
        self.data_dir = data_dir
        self.images = images
        self.entrypoints = entrypoints
        self.network = network
        self.user = user
        self.limits = limits
        self._prefix = "cruscible-" + hashlib.sha256(str(data_dir).encode()).hexdigest()[:8]
        self._relays: dict[tuple[str, Resource], subprocess.Popen[bytes]] = {}

    # -- finding containers -------------------------------------------------

    def _name(self, env_id: str, kind: Resource) -> str:
        return f"{self._prefix}-{env_id}-{kind.value}"

    def _find(self, env_id: str | None = None) -> list[Container]:
        """Our containers (this data directory's), of one environment or all."""
        labels = [f"{LABEL_DATA_DIR}={self.data_dir}"]
        if env_id is not None:
            labels.append(f"{LABEL_ENV}={env_id}")
        return self.client.containers.list(all=True, filters={"label": labels})

    def _one(self, env_id: str, kind: Resource) -> Container | None:
        try:
            return self.client.containers.get(self._name(env_id, kind))
        except NotFound:
            return None

    # -- starting -------------------------------------------------------------

    def _run(
        self,
        env_id: str,
        kind: Resource,
        driver: Driver,
        slot: Slot,
        info: ResourceInfo,
        expires_at: datetime,
    ) -> None:
        argv = (
            driver.server_argv(slot, info)
            if isinstance(driver, RelayedDriver)
            else driver.argv(slot, info)
        )
        limits = self.limits.get(kind, Limits())
        ports = info.extra.get("ports", {}).values()
        self.client.containers.run(
            self.images[kind],
            entrypoint=[self.entrypoints[kind]],
            command=argv[1:],
            name=self._name(env_id, kind),
            labels={
                LABEL_ENV: env_id,
                LABEL_RESOURCE: kind.value,
                LABEL_DATA_DIR: str(self.data_dir),
                LABEL_EXPIRES: expires_at.isoformat(),
            },
            environment={
                **driver.environment(slot, info),
                processes.MARK_ENV: env_id,
                processes.MARK_DIR: str(self.data_dir),
                processes.MARK_RESOURCE: kind.value,
            },
            user=self.user,
            working_dir=str(slot.home),
            volumes={str(slot.home): {"bind": str(slot.home), "mode": "rw"}},
            network_mode=self.network,
            ports=None if self.network == "host" else {f"{p}/tcp": ("127.0.0.1", p) for p in ports},
            mem_limit=limits.memory,
            nano_cpus=int(limits.cpus * 1e9),
            stop_signal=driver.stop_signal.name,
            detach=True,
        )

    def _start_sync(
        self,
        env_id: str,
        kind: Resource,
        driver: Driver,
        slot: Slot,
        info: ResourceInfo,
        fresh: bool,
        expires_at: datetime,
    ) -> None:
        container = self._one(env_id, kind)
        if container is not None and fresh:
            container.remove(force=True, v=True)
            container = None
        if container is None:
            self._run(env_id, kind, driver, slot, info, expires_at)
        else:
            container.start()

    # -- relays -------------------------------------------------------------------

    def _relay_procs(self, env_id: str | None, kind: Resource | None) -> list[processes.Marked]:
        """The live relay processes of ``env_id`` (all environments: None), of one kind or all."""
        names = {k.value + RELAY for k in ([kind] if kind is not None else self.images)}
        return [
            m
            for m in processes.scan(self.data_dir)
            if m.resource in names and (env_id is None or m.env_id == env_id)
        ]

    async def _stop_relays(self, env_id: str | None, kind: Resource | None = None) -> None:
        """SIGTERM the relays (they close their public ports and exit), SIGKILL what lingers."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            procs = self._relay_procs(env_id, kind)
            if not procs:
                break
            processes.signal_groups(procs, sig)
            await processes.wait_until(lambda: not self._relay_procs(env_id, kind), 5.0)
        for key in [k for k in self._relays if env_id in (None, k[0]) and kind in (None, k[1])]:
            self._relays.pop(key).poll()
        if self._relay_procs(env_id, kind):
            raise ProvisioningError(f"could not stop the TLS relays of {env_id}")

    async def _start_relay(
        self, env_id: str, kind: Resource, driver: Driver, slot: Slot, info: ResourceInfo
    ) -> None:
        """Exposed: (re)start the relay that serves the container's loopback port over TLS on
        the public port, and wait until it listens there or exited (a taken port: ``exit_code``
        and ``log_tail`` report it), as the local relay binds before it starts its server."""
        relay = driver.relay(slot, info) if isinstance(driver, RelayedDriver) else None
        if relay is None:
            return
        await self._stop_relays(env_id, kind)
        proc = self._relays[(env_id, kind)] = await asyncio.to_thread(
            processes.spawn,
            relay_argv(slot, relay, None),
            cwd=slot.home,
            log_path=slot.home / RELAY_LOG,
            data_dir=self.data_dir,
            env_id=env_id,
            resource=kind.value + RELAY,
            run_as=RunAs(),  # our Python, reading our certificate's key
            extra_env=relay_environment(),
        )
        await processes.wait_until(
            lambda: proc.poll() is not None or _listening(proc.pid, relay.public_port),
            RELAY_BIND_S,
        )

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
        await self._start_relay(env_id, kind, driver, slot, info)
        try:
            await asyncio.to_thread(
                self._start_sync, env_id, kind, driver, slot, info, fresh, expires_at
            )
        except APIError as exc:
            raise ProvisioningError(f"docker could not start {kind.value}: {exc}") from None

    # -- state --------------------------------------------------------------------

    def _attrs(self, env_id: str, kind: Resource) -> dict[str, Any] | None:
        try:
            return self.client.api.inspect_container(self._name(env_id, kind))["State"]
        except NotFound:
            return None

    def _relay_exit(self, env_id: str, kind: Resource) -> int | None:
        """The exit code of the relay this runtime started for the server, once it exited."""
        relay = self._relays.get((env_id, kind))
        return None if relay is None else relay.poll()

    async def exit_code(self, env_id: str, kind: Resource) -> int | None:
        relay = self._relay_exit(env_id, kind)
        if relay is not None:
            return relay
        state = await asyncio.to_thread(self._attrs, env_id, kind)
        if state is None:
            return -1
        if state["Status"] in ("exited", "dead"):
            return int(state["ExitCode"])
        return None

    async def log_tail(self, env_id: str, kind: Resource, slot: Slot) -> str:
        if self._relay_exit(env_id, kind) is not None:
            return processes.log_tail(slot.home / RELAY_LOG)
        container = await asyncio.to_thread(self._one, env_id, kind)
        if container is None:
            return "(no container)"
        raw = await asyncio.to_thread(container.logs, tail=15)
        return raw.decode(errors="replace").rstrip()

    async def state(self, env_id: str, kind: Resource) -> State:
        state = await asyncio.to_thread(self._attrs, env_id, kind)
        if state is None or not state["Running"]:
            return State.STOPPED
        return State.PAUSED if state["Paused"] else State.RUNNING

    async def states(self, env_id: str) -> dict[Resource, State]:
        found = await asyncio.to_thread(self._find, env_id)
        return {
            Resource(c.labels[LABEL_RESOURCE]): _STATUS.get(c.status, State.STOPPED) for c in found
        }

    # -- signals ------------------------------------------------------------------

    async def _call(self, env_id: str, kind: Resource, method: str, **kw: Any) -> None:
        try:
            await asyncio.to_thread(
                getattr(self.client.api, method), self._name(env_id, kind), **kw
            )
        except APIError as exc:
            raise ProvisioningError(f"docker {method} of {kind.value} failed: {exc}") from None

    async def pause(self, env_id: str, kind: Resource) -> str:
        await self._call(env_id, kind, "pause")
        return "container paused"

    async def resume(self, env_id: str, kind: Resource) -> str:
        if await self.state(env_id, kind) is not State.PAUSED:
            return "was not paused"
        await self._call(env_id, kind, "unpause")
        return "container unpaused"

    async def terminate(self, env_id: str, kind: Resource, sig: signal.Signals) -> bool:
        if await self.state(env_id, kind) is State.STOPPED:
            return True
        await self._call(env_id, kind, "kill", signal=sig.name)
        stopped = await asyncio.to_thread(self._wait_stopped, env_id, kind, STOP_GRACE)
        if stopped:
            await self._stop_relays(env_id, kind)
        return stopped

    async def kill(self, env_id: str, kind: Resource | None = None) -> int:
        await self._stop_relays(env_id, kind)
        killed = 0
        for k in [kind] if kind is not None else list(self.images):
            state = await self.state(env_id, k)
            if state is State.STOPPED:
                continue
            if state is State.PAUSED:
                await self._call(env_id, k, "unpause")
            try:
                await self._call(env_id, k, "kill")
            except ProvisioningError:
                if await self.state(env_id, k) is not State.STOPPED:
                    raise
            if not await asyncio.to_thread(self._wait_stopped, env_id, k, 10.0):
                raise ProvisioningError(f"could not kill the {k.value} container of {env_id}")
            killed += 1
        return killed

    def _wait_stopped(self, env_id: str, kind: Resource, budget: float) -> bool:
        try:
            self.client.api.wait(self._name(env_id, kind), timeout=budget)
        except NotFound:
            pass
        except requests.exceptions.RequestException:
            return False
        return True

    # -- removal ------------------------------------------------------------------

    @staticmethod
    def _remove(containers: list[Container]) -> None:
        for container in containers:
            with contextlib.suppress(NotFound):
                container.remove(force=True, v=True)

    async def remove(self, env_id: str) -> None:
        await self._stop_relays(env_id)
        await asyncio.to_thread(lambda: self._remove(self._find(env_id)))

    async def collect(self, alive: Callable[[str], bool]) -> None:
        def sweep() -> None:
            stale = [c for c in self._find() if not alive(c.labels.get(LABEL_ENV, ""))]
            for env_id in sorted({c.labels.get(LABEL_ENV, "") for c in stale}):
                log.warning("removing containers of vanished environment %s", env_id)
            self._remove(stale)

        for env_id in sorted({m.env_id for m in self._relay_procs(None, None)}):
            if not alive(env_id):
                log.warning("stopping the TLS relays of vanished environment %s", env_id)
                await self._stop_relays(env_id)
        await asyncio.to_thread(sweep)

    async def close(self) -> None:
        for relay in self._relays.values():
            relay.poll()
        self._relays.clear()
        await asyncio.to_thread(self.client.close)


def container_user(uid: int | None, gid: int | None) -> str:
    """``uid:gid`` the servers run as: the service user when root, else ourselves."""
    return f"{os.getuid() if uid is None else uid}:{os.getgid() if gid is None else gid}"
