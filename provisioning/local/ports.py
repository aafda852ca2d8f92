"""Race-free loopback port leases shared by every backend using one data directory.

A lease is a file ``<ports_dir>/<port>`` naming the environment that owns it,
created and checked under an exclusive ``flock`` on ``<ports_dir>/.lock``. A
lease lasts as long as its environment's directory exists, so a port stays
reserved while its server is killed and started again, and a crash leaves no
lease behind that a later allocation cannot reclaim. A port is handed out only
if nothing listens on it; a foreign process may still grab it before our
server binds, which the caller detects and retries on other ports.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

from provisioning.backend import ProvisioningError

HOST = "127.0.0.1"


def port_is_free(port: int) -> bool:
    """True if a server could bind 127.0.0.1:port now (like servers do, with SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


class PortPool:
    """Leases ports from ``port_range`` (inclusive) to environments."""

    def __init__(
        self, ports_dir: Path, port_range: tuple[int, int], alive: Callable[[str], bool]
    ) -> None:
        low, high = port_range
        if not 1024 < low <= high < 65536:
            raise ValueError(f"bad port range {port_range}")
        self.dir = ports_dir
        self.range = range(low, high + 1)
        self.alive = alive  # whether an environment id still exists
        self.dir.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _owner(self, port: int) -> str | None:
        try:
            return (self.dir / str(port)).read_text().strip() or None
        except FileNotFoundError:
            return None

    def _candidates(self) -> list[int]:
        return random.sample(self.range, len(self.range))

    def allocate(self, env_id: str, count: int, avoid: frozenset[int] = frozenset()) -> list[int]:
        """Lease ``count`` distinct free ports to ``env_id``, none of ``avoid``."""
        chosen: list[int] = []
        with self._locked():
            for port in self._candidates():
                if port in avoid:
                    continue
                owner = self._owner(port)
                if owner is not None and (owner == env_id or self.alive(owner)):
                    continue
                if not port_is_free(port):
                    continue
                (self.dir / str(port)).write_text(env_id)
                chosen.append(port)
                if len(chosen) == count:
                    return chosen
            for port in chosen:
                (self.dir / str(port)).unlink(missing_ok=True)
        raise ProvisioningError(
            f"no {count} free ports left in {self.range.start}-{self.range.stop - 1}"
        )

    def release(self, env_id: str, ports: list[int] | None = None) -> None:
        """Give back ``ports`` (default: every port) leased to ``env_id``."""
        with self._locked():
            for port in ports if ports is not None else self.leased():
                if self._owner(port) == env_id:
                    (self.dir / str(port)).unlink(missing_ok=True)

    def leased(self, env_id: str | None = None) -> list[int]:
        """Ports with a lease file, optionally only those of ``env_id``."""
        ports = sorted(int(p.name) for p in self.dir.iterdir() if p.name.isdigit())
        return [p for p in ports if env_id is None or self._owner(p) == env_id]

    def collect(self) -> None:
        """Drop leases whose environment no longer exists."""
        with self._locked():
            for port in self.leased():
                owner = self._owner(port)
                if owner is None or not self.alive(owner):
                    (self.dir / str(port)).unlink(missing_ok=True)
