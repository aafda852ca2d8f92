"""The interface each service module implements, and what it is given to work with."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import string
import sys
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from provisioning.environment import ResourceInfo
from provisioning.local.ports import HOST
from provisioning.local.users import RunAs
from provisioning.spec import Resource
from provisioning.tls import Exposure


class NotReady(Exception):
    """The probe failed; the server may still be starting."""


def password(nbytes: int = 24) -> str:
    """A fresh URL-safe random password."""
    return secrets.token_urlsafe(nbytes)


def access_key() -> str:
    """A fresh AWS-style access key id."""
    alphabet = string.ascii_uppercase + string.digits
    return "AK" + "".join(secrets.choice(alphabet) for _ in range(18))


async def port_open(host: str, port: int, budget: float) -> None:
    """Raise NotReady unless something accepts TCP connections on ``host:port``."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), budget)
    except (OSError, TimeoutError) as exc:
        raise NotReady(f"port {port} is not accepting connections: {exc}") from None
    writer.close()


PUBLIC = "public"  # exposed: the port of the TLS relay in front of a loopback server


@dataclass(frozen=True)
class Relay:
    """The TLS relay in front of an exposed server: the public port it listens on, the loopback
    port it forwards to, how it reads the protocol (``provisioning.local.tlsrelay``), the
    server's answer that counts as a failed login, and the only account it lets log in
    (``protocol="redis"``: a Valkey user; ``"s3"``: an access key)."""

    public_port: int
    to_port: int
    protocol: str = "tls"
    fail_pattern: str = ""
    user: str = ""


def relay_argv(slot: Slot, relay: Relay, server: list[str] | None) -> list[str]:
    """The command line of ``relay``: it runs as us and starts ``server`` as the service user
    (when root), or, without ``server`` (a server in a container), relays until stopped."""
    assert slot.exposure is not None
    run_as = slot.run_as
    argv = [
        sys.executable, "-m", "provisioning.local.tlsrelay", "--protocol", relay.protocol,
        "--listen", slot.exposure.listen_host, "--port", str(relay.public_port),
        "--to-port", str(relay.to_port),
        *([f"--fail-pattern={relay.fail_pattern}"] if relay.fail_pattern else []),
        *([f"--user={relay.user}"] if relay.user else []),
        "--cert", str(slot.home / "tls.crt"), "--key", str(slot.home / "tls.key"),
    ]  # fmt: skip
    if server is None:
        return argv
    if run_as.uid is not None:
        argv += ["--uid", str(run_as.uid), "--gid", str(run_as.gid)]
    return [*argv, "--", *server]


def relay_environment() -> dict[str, str]:
    """The relay imports this package: the same import path as ours."""
    return {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}


@dataclass(frozen=True)
class Slot:
    """Where one resource of one environment lives."""

    env_id: str
    home: Path  # <env dir>/<kind>, owned by the user servers run as
    run_as: RunAs
    options: Mapping[str, str] = field(default_factory=dict)  # from the spec, at configure
    bind: str = HOST  # the address servers listen on (0.0.0.0 inside a bridged container)
    exposure: Exposure | None = None  # set: learner listeners on the public side, TLS only

    @property
    def public(self) -> str:
        """The host learners' URLs name: the public host when exposed, else loopback."""
        return self.exposure.public_host if self.exposure is not None else HOST

    @property
    def local(self) -> str:
        """The host the grader on this machine connects to."""
        return self.exposure.local_host if self.exposure is not None else HOST

    @property
    def log_path(self) -> Path:
        return self.home / "server.log"


class Driver(ABC):
    """One kind of server: configure, command line, readiness probe, stop, wipe."""

    kind: ClassVar[Resource]
    port_names: ClassVar[tuple[str, ...]] = ("port",)
    durable: ClassVar[bool] = False  # restart-lose-data is refused for durable resources
    host: ClassVar[str] = HOST
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM
    service_user: ClassVar[bool] = True  # drop to the unprivileged service user when root

    def ports_for(self, slot: Slot) -> tuple[str, ...]:
        """The names of the ports ``configure`` is given for ``slot``."""
        return self.port_names

    def runs_as_service_user(self, slot: Slot) -> bool:
        """Whether the process started for ``slot`` drops to the service user when root."""
        return self.service_user

    @abstractmethod
    def configure(self, slot: Slot, ports: dict[str, int]) -> ResourceInfo:
        """Write config files with fresh credentials; return the resource's description."""

    @abstractmethod
    def argv(self, slot: Slot, info: ResourceInfo) -> list[str]:
        """The command line that runs the server."""

    def environment(self, slot: Slot, info: ResourceInfo) -> dict[str, str]:
        """Extra environment variables for the server process."""
        return {}

    async def bootstrap(self, slot: Slot, info: ResourceInfo) -> None:  # noqa: B027
        """One-time setup after the first start, before the first probe."""

    @abstractmethod
    async def probe(self, slot: Slot, info: ResourceInfo, budget: float) -> str:
        """An authenticated request proving the server is ours and serving; raise NotReady."""

    async def prepare_stop(self, info: ResourceInfo) -> None:  # noqa: B027
        """Ask the server to persist what a clean restart must keep (before SIGTERM)."""

    async def after_start(self, slot: Slot, info: ResourceInfo) -> None:  # noqa: B027
        """Called once the server proved ready (e.g. drop a consumed snapshot)."""

    def cleanup(self, slot: Slot) -> None:  # noqa: B027
        """Remove what the server left outside its directory, once it is gone."""

    def wipe(self, slot: Slot) -> None:
        """Delete the server's data (its config and credentials stay)."""
        data = slot.home / "data"
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir(mode=0o700)
        slot.run_as.own(data)


class RelayedDriver(Driver):
    """A server whose build cannot speak TLS itself: exposed (``slot.exposure``), it stays on
    loopback and our TLS relay (``provisioning.local.tlsrelay``) serves it on the public port.
    The relay is our Python, so it runs as us and starts the server as the service user; a
    runtime that runs the server elsewhere (a container) runs ``server_argv`` there and the
    relay described by ``relay`` here."""

    @abstractmethod
    def server_argv(self, slot: Slot, info: ResourceInfo) -> list[str]:
        """The server's own command line, on loopback in plain text."""

    @abstractmethod
    def relay(self, slot: Slot, info: ResourceInfo) -> Relay | None:
        """The relay in front of the server when exposed, else None."""

    def argv(self, slot: Slot, info: ResourceInfo) -> list[str]:
        server = self.server_argv(slot, info)
        relay = self.relay(slot, info)
        return server if relay is None else relay_argv(slot, relay, server)

    def ports_for(self, slot: Slot) -> tuple[str, ...]:
        return self.port_names if slot.exposure is None else (*self.port_names, PUBLIC)

    def runs_as_service_user(self, slot: Slot) -> bool:
        return slot.exposure is None

    def environment(self, slot: Slot, info: ResourceInfo) -> dict[str, str]:
        return {} if slot.exposure is None else relay_environment()
