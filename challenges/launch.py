"""Runs a reference design (or any ``python -m`` service) against a connection bundle."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import aiohttp

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PORT_RANGE = (30000, 39999)  # apart from provisioning's leases
START_DEADLINE_S = 20.0


class LaunchError(RuntimeError):
    """The service did not come up; the message carries the tail of its output."""


class RunningService:
    def __init__(
        self,
        module: str,
        proc: asyncio.subprocess.Process,
        port: int,
        log: Path,
        host: str = "127.0.0.1",
    ):
        self.module = module
        self.proc = proc
        self.port = port
        self.log = log
        self.host = host

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def stop(self, grace_s: float = 5.0) -> None:
        if self.proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), grace_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()


async def _healthy(service: RunningService, deadline_s: float) -> bool:
    end = time.monotonic() + deadline_s
    timeout = aiohttp.ClientTimeout(total=1.0)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        while time.monotonic() < end and service.proc.returncode is None:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.get(f"{service.url}/healthz") as resp:
                    if resp.status == 200:
                        return True
            await asyncio.sleep(0.1)
    return False


async def start_service(
    module: str,
    bundle: Mapping[str, str],
    *,
    cwd: Path = PROJECT_ROOT,
    attempts: int = 5,
    host: str = "127.0.0.1",
) -> RunningService:
    """Start ``python -m module --host H --port N`` with ``bundle`` in its environment; wait
    for /healthz.

    ``cwd`` is where the module's top package is found; ``host`` the address it binds. A port another process holds makes
    the service exit at bind; it is retried on another.
    """
    env = {**os.environ, **bundle, "PYTHONUNBUFFERED": "1"}
    last = ""
    for _ in range(attempts):
        port = random.randint(*PORT_RANGE)
        log = Path(tempfile.mkstemp(prefix="cruscible-service-", suffix=".log")[1])
        with log.open("wb") as sink:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                module,
                "--host",
                host,
                "--port",
                str(port),
                env=env,
                cwd=cwd,
                stdout=sink,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        service = RunningService(module, proc, port, log, host)
        if await _healthy(service, START_DEADLINE_S):
            return service
        await service.stop()
        last = service.output_tail()
        log.unlink(missing_ok=True)
        if "address already in use" not in last.lower():
            break
    raise LaunchError(f"{module} did not become healthy:\n{last}")


@contextlib.asynccontextmanager
async def running(
    module: str, bundle: Mapping[str, str], *, cwd: Path = PROJECT_ROOT, host: str = "127.0.0.1"
) -> AsyncIterator[RunningService]:
    service = await start_service(module, bundle, cwd=cwd, host=host)
    try:
        yield service
    finally:
        await service.stop()
        service.log.unlink(missing_ok=True)
