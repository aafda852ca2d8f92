"""The interface each service module implements, and what it is given to work with."""

from __future__ import annotations

import asyncio
import secrets
import shutil
import signal
import string
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from provisioning.environment import ResourceInfo
from provisioning.local.ports import HOST
from provisioning.local.users import RunAs
from provisioning.spec import Resource


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


@dataclass(frozen=True)
class Slot:
    """Where one resource of one environment lives."""

    env_id: str
    home: Path  # <env dir>/<kind>, owned by the user servers run as
    run_as: RunAs
    options: Mapping[str, str] = field(default_factory=dict)  # from the spec, at configure
    bind: str = HOST  # the address servers listen on (0.0.0.0 inside a bridged container)

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
