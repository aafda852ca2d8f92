"""A private Docker engine for tests and benchmarks on machines that have none running.

Uses ``$DOCKER_HOST`` or an engine already listening on ``<root>/docker.sock``;
otherwise starts Debian's ``dockerd`` (installing ``docker.io`` when root and
apt is there) with no bridge and no iptables, so containers only get the host
network, and with its own socket, data and exec directories under ``root``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import docker
from docker.errors import DockerException

log = logging.getLogger(__name__)

ROOT = Path("/tmp/cruscible-docker")


class EngineUnavailable(RuntimeError):
    """No engine is reachable and none could be started here."""


def reachable(url: str) -> bool:
    try:
        client = docker.DockerClient(base_url=url, timeout=5)
    except DockerException:
        return False
    try:
        return bool(client.ping())
    except (DockerException, OSError):
        return False
    finally:
        client.close()


@dataclass
class Engine:
    """A reachable engine; ``process`` is set when we started it (and so stop it)."""

    url: str
    process: subprocess.Popen[bytes] | None = None

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def dockerd_argv(root: Path) -> list[str]:
    """The command line of a bridge-less, iptables-less engine living under ``root``."""
    return [
        "dockerd",
        "--bridge=none",
        "--iptables=false",
        "--ip6tables=false",
        f"--host=unix://{root}/docker.sock",
        f"--data-root={root}/data",
        f"--exec-root={root}/exec",
        f"--pidfile={root}/docker.pid",
    ]


def _install() -> None:
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise EngineUnavailable("dockerd is not installed (apt-get install docker.io, as root)")
    log.info("installing docker.io")
    for argv in (["apt-get", "update"], ["apt-get", "install", "-y", "docker.io"]):
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0:
            raise EngineUnavailable(f"{' '.join(argv)} failed: {done.stderr[-500:]}")


def ensure_engine(root: Path = ROOT, *, install: bool = True, timeout: float = 60.0) -> Engine:
    """An engine to talk to: the configured one, ours under ``root``, or a new one.

    A new engine tries the default storage driver first, then ``vfs`` (which works where
    overlay mounts are refused, e.g. inside another container).
    """
    for url in (os.environ.get("DOCKER_HOST", ""), f"unix://{root}/docker.sock"):
        if url and reachable(url):
            return Engine(url)
    if shutil.which("dockerd") is None:
        if not install:
            raise EngineUnavailable("dockerd is not installed")
        _install()
    root.mkdir(parents=True, exist_ok=True)
    try:
        return _start(root, [], timeout)
    except EngineUnavailable as first:
        log.warning("dockerd did not start (%s); retrying with the vfs storage driver", first)
        return _start(root, ["--storage-driver=vfs"], timeout)


def _start(root: Path, extra: list[str], timeout: float) -> Engine:
    with contextlib.suppress(FileNotFoundError):
        (root / "docker.sock").unlink()
    url = f"unix://{root}/docker.sock"
    with open(root / "dockerd.log", "ab") as out:
        proc = subprocess.Popen(
            dockerd_argv(root) + extra,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise EngineUnavailable(
                f"dockerd exited with {proc.returncode}; see {root}/dockerd.log"
            )
        if reachable(url):
            return Engine(url, proc)
        time.sleep(0.2)
    Engine(url, proc).stop()
    raise EngineUnavailable(f"dockerd did not answer within {timeout:.0f}s")
