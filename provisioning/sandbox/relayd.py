"""The host side of a box's network in its own process: one small relay process per box.

Why a process: the bytes a learner's service exchanges with its database, cache or queue cross
the host-side relays (``<net>/out-<port>.sock`` to ``127.0.0.1:<port>``, and the registry
proxy). In the caller's event loop they would compete with whatever else runs there (during a
hosted grade, the load generator whose latencies are measured). Here they run in a child
process, on uvloop when it is installed.

Child (``python -m provisioning.sandbox.relayd --socket-dir DIR --forward PORT ...
[--proxy PORT --allow HOST:PORT ...] --parent PID``): listens on every socket file, then
prints ``ready`` on stdout; each refusal of the proxy is a line ``refused <json string>``.
It ends on ``SIGTERM``, when its stdin reaches end of file (the parent closed it or died), and
when its parent dies (``PR_SET_PDEATHSIG``: https://man7.org/linux/man-pages/man2/prctl.2.html).

Parent: ``relay = await RelayProcess.start(net, forwards, proxy=..., on_failure=...)``,
``relay.pid``, ``relay.refused``, ``await relay.stop()``; a relay process that exits on its own
is started again (up to 3 times), then ``on_failure(reason)`` is called.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from provisioning.sandbox.relay import Forward, serve_forward
from provisioning.sandbox.spec import SandboxError

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0
MAX_RESTARTS = 3
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_PROJECT = Path(__file__).resolve().parents[2]


class RelayProcess:
    """A running relay process (parent side), supervised: when it exits on its own it is
    started again (at most ``MAX_RESTARTS`` times; connections open then are lost, new ones
    work), after which ``on_failure`` is called with the reason. ``refused``: what the proxy
    denied, as ``"host:port"`` (or the raw target when it had none), in order."""

    def __init__(
        self,
        argv: list[str],
        env: dict[str, str],
        stderr: Path | None,
        on_failure: Callable[[str], None] | None,
    ) -> None:
        self._argv = argv
        self._env = env
        self._stderr = stderr
        self._on_failure = on_failure
        self._proc: asyncio.subprocess.Process | None = None
        self._starting: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._stopping = False
        self.refused: list[str] = []
        self.restarts = 0

    @property
    def pid(self) -> int:
        """The pid of the current relay process."""
        assert self._proc is not None
        return self._proc.pid

    @property
    def running(self) -> bool:
        """Whether the current relay process has not exited."""
        return self._proc is not None and self._proc.returncode is None

    @classmethod
    async def start(
        cls,
        net: Path,
        forwards: Iterable[int],
        *,
        proxy: tuple[int, frozenset[tuple[str, int]]] | None = None,
        stderr: Path | None = None,
        on_failure: Callable[[str], None] | None = None,
        timeout: float = READY_TIMEOUT_S,  # noqa: ASYNC109
    ) -> RelayProcess:
        """Start the relay process for the socket files under ``net`` and wait until it
        listens on all of them: ``forwards`` (host ``127.0.0.1`` ports) and ``proxy``
        (``(port, allowed (host, port) pairs)``, the registry proxy). Its stderr goes to
        ``stderr`` (a host file the box cannot reach) or is dropped. Raises
        :class:`SandboxError` when it does not become ready within ``timeout`` seconds;
        nothing is left running then. Its environment is minimal: no secret of the caller
        reaches it."""
        argv = [
            sys.executable,
            "-m",
            "provisioning.sandbox.relayd",
            "--socket-dir",
            str(net),
            "--parent",
            str(os.getpid()),
        ]
        for port in forwards:
            argv += ["--forward", str(port)]
        if proxy is not None:
            argv += ["--proxy", str(proxy[0])]
            for host, port in sorted(proxy[1]):
                argv += ["--allow", f"{host}:{port}"]
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "PYTHONPATH": os.pathsep.join([str(_PROJECT), *sys.path[1:]]),
        }
        relay = cls(argv, env, stderr, on_failure)
        await relay._spawn(timeout)
        relay._watch = asyncio.create_task(relay._supervise(timeout))
        return relay

    async def _spawn(self, timeout: float) -> None:  # noqa: ASYNC109
        with open(self._stderr or os.devnull, "ab") as err:
            proc = await asyncio.create_subprocess_exec(
                *self._argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                env=self._env,
                start_new_session=True,  # a terminal's ^C reaches the caller, which stops us
            )
        self._starting = proc
        assert proc.stdout is not None
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), timeout)
        except TimeoutError:
            line = b""
        finally:
            self._starting = None
        if self._stopping:
            line = b""
        if line.strip() != b"ready":
            await self._end(proc)
            detail = ""
            if self._stderr is not None:
                with contextlib.suppress(OSError, IndexError):
                    detail = self._stderr.read_text(errors="replace").strip().splitlines()[-1]
            raise SandboxError(
                "the box's relay process did not start"
                + (f": {detail}" if detail else f" (exit {proc.returncode})")
            )
        self._proc = proc  # only once it listens: ``pid`` names a ready relay process
        self._reader = asyncio.create_task(self._read_reports(proc))

    async def _supervise(self, timeout: float) -> None:  # noqa: ASYNC109
        while True:
            assert self._proc is not None
            code = await self._proc.wait()
            if self._stopping:
                return
            if self._reader is not None:
                await self._reader  # what it reported before it ended
            if self.restarts >= MAX_RESTARTS:
                reason = f"relay process exited ({code}) {self.restarts + 1} times"
                log.error("%s; giving up", reason)
                if self._on_failure is not None:
                    self._on_failure(reason)
                return
            self.restarts += 1
            log.warning("relay process exited (%s); starting it again", code)
            try:
                await self._spawn(timeout)
            except SandboxError as exc:
                if self._on_failure is not None and not self._stopping:
                    self._on_failure(str(exc))
                return

    async def _read_reports(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            kind, _, rest = line.decode("utf-8", "replace").strip().partition(" ")
            if kind == "refused":
                with contextlib.suppress(ValueError):
                    self.refused.append(str(json.loads(rest)))

    @staticmethod
    async def _end(proc: asyncio.subprocess.Process) -> None:
        if proc.stdin is not None and not proc.stdin.is_closing():
            proc.stdin.close()
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()

    async def stop(self) -> None:
        """End the relay process (every open connection with it): ``SIGTERM``, then
        ``SIGKILL`` after 5 s; no restart after this. Idempotent."""
        self._stopping = True
        for proc in (self._starting, self._proc):
            if proc is not None:
                await self._end(proc)
        for task in (self._watch, self._reader):
            if task is not None and task is not asyncio.current_task():
                with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                    await asyncio.wait_for(task, 1)
        self._watch = self._reader = None


# --------------------------------------------------------------------- the child process


def _die_with_parent(parent: int) -> None:
    """SIGKILL when the parent dies; exit now if it already has (the pid was reparented)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        sys.exit(1)


def _allowed(values: list[str]) -> frozenset[tuple[str, int]]:
    pairs = set()
    for value in values:
        host, _, port = value.rpartition(":")
        pairs.add((host.lower(), int(port)))
    return frozenset(pairs)


async def _serve(args: argparse.Namespace) -> None:
    from provisioning.sandbox import registry  # registry imports relay: late, no cycle

    net = Path(args.socket_dir)
    listeners: list[Forward] = []
    proxy: registry.Proxy | None = None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def report(what: str) -> None:
        sys.stdout.write(f"refused {json.dumps(what)}\n")
        sys.stdout.flush()

    try:
        for port in args.forward:
            listeners.append(await serve_forward(net / f"out-{port}.sock", port))
        if args.proxy is not None:
            proxy = registry.Proxy(_allowed(args.allow), on_refused=report)
            await proxy.serve(net / f"out-{args.proxy}.sock")
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        stdin = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
        eof = asyncio.ensure_future(stdin.read())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({eof, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        eof.cancel()
    finally:
        for listener in listeners:
            await listener.close()
        if proxy is not None:
            await proxy.close()


def main(argv: list[str] | None = None) -> None:
    """Entry point of the relay process (see the module's docstring)."""
    parser = argparse.ArgumentParser(prog="python -m provisioning.sandbox.relayd")
    parser.add_argument("--socket-dir", required=True)
    parser.add_argument("--forward", type=int, action="append", default=[])
    parser.add_argument("--proxy", type=int)
    parser.add_argument("--allow", action="append", default=[])
    parser.add_argument("--parent", type=int, required=True)
    args = parser.parse_args(argv)
    _die_with_parent(args.parent)
    logging.basicConfig(level=logging.WARNING, format="relay: %(levelname)s %(message)s")
    try:
        import uvloop
    except ImportError:
        asyncio.run(_serve(args))
    else:
        uvloop.run(_serve(args))


if __name__ == "__main__":
    main()
