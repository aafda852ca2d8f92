"""A box: the learner's processes under bubblewrap, in a private network namespace with only
loopback, inside a cgroup, as an unprivileged user with no capabilities and no_new_privs.

How it is started (as root): ``sh`` writes its pid to the box's ``cgroup.procs`` files, then
``prlimit`` sets the per-process rlimits, ``setpriv`` drops to the sandbox user (clearing
groups, setting no_new_privs), and ``bwrap`` builds the namespaces and a read-only view of
the system (bubblewrap(1): https://github.com/containers/bubblewrap/blob/main/bwrap.xml;
as root, bwrap's own ``--uid`` would still be root outside, hence the drop first).
Inside, :mod:`provisioning.sandbox.boxinit` supervises the processes and relays sockets.

Host layout under ``root`` (0755, owned by us; the box sees ``net`` at ``/box/net``)::

    root/net/out-<port>.sock        we listen (relay to host 127.0.0.1:<port>); box connects
    root/net/in-<name>-<i>.sock     we create and pass the listening socket to the box;
                                    the balancer connects (Box.inbound)
    root/logs/<name>-<i>.log        stdout+stderr of each replica (files the box may only
                                    write; the directory is ours)
    root/net/control.sock           we create it (owner-only) and pass the listening socket
                                    to the box; we connect to kill or start a process
                                    (Box.kill_process, Box.start_process)
    root/state/status.json          what boxinit reports
    root/etc/{passwd,group,hosts}   the box's minimal /etc
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import socket
import stat
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from provisioning.sandbox import cgroups, host, registry
from provisioning.sandbox.cgroups import Cgroup
from provisioning.sandbox.limits import Limits
from provisioning.sandbox.relay import check_socket_path
from provisioning.sandbox.relayd import RelayProcess
from provisioning.sandbox.spec import BoxSpec, ProcessFault, ProcessState, SandboxError

log = logging.getLogger(__name__)

PROXY_PORT = 3128
FIRST_PORT = 8000
DISK_POLL_S = 0.25
ETC_FILES = ("ld.so.cache", "localtime", "nsswitch.conf", "mime.types")
ETC_DIRS = ("ssl", "ca-certificates", "alternatives")
MASK = "•••"
CONTROL_TIMEOUT_S = 15.0
CONTROL_ANSWER_LIMIT = 64 * 1024


@dataclass(frozen=True)
class _Replica:
    name: str
    replica: int
    command: str
    port: int | None


def _mask(text: str, values: tuple[str, ...]) -> str:
    for value in sorted((v for v in values if v), key=len, reverse=True):
        text = text.replace(value, MASK)
    return text


def _read_safely(path: Path, limit: int | None = None) -> bytes:
    """Read a file the box can write to without following a link it may have planted."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"{path} is not a regular file")
        if limit is not None and info.st_size > limit:
            os.lseek(fd, info.st_size - limit, os.SEEK_SET)
        chunks = []
        while data := os.read(fd, 1 << 20):
            chunks.append(data)
            if limit is not None and sum(map(len, chunks)) >= limit:
                break
        return b"".join(chunks)
    finally:
        os.close(fd)


def _disk_usage(path: Path) -> int:
    """Bytes allocated under ``path`` (st_blocks), links not followed."""
    total = 0
    for top, dirs, files in os.walk(path):
        for name in dirs + files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(top, name)).st_blocks * 512
    return total


def _blocking_dir(path: Path, uid: int, gid: int) -> Path | None:
    for parent in [*reversed(path.parents), path]:
        st = parent.stat()
        if st.st_mode & 0o001 or (st.st_uid == uid and st.st_mode & 0o100):
            continue
        if st.st_gid == gid and st.st_mode & 0o010:
            continue
        return parent
    return None


class Box:
    """A running box. Start it with :meth:`start`; always :meth:`stop` it (idempotent).

    ``isolation`` says what was enforced, e.g. ``{"user": "cruscible-sandbox", "net":
    "private (loopback only)", "cgroup": "v1", "fs": "read-only system, private /tmp",
    "limits": "memory 512 MB, cpus 1.5, pids 256, disk 512 MB, open files 1024"}``;
    without root ``"cgroup"`` is ``"none (rlimits only)"``.
    """

    def __init__(self, spec: BoxSpec, root: Path) -> None:
        self.spec = spec
        self.root = root
        self.id = "box-" + secrets.token_hex(6)
        self.isolation: dict[str, str] = {}
        self._replicas: list[_Replica] = []
        self._relay: RelayProcess | None = None
        self._cgroup: Cgroup | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._done = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._kill_reason: str | None = None
        self._oom_kills = 0
        self._pids_refused = 0
        self._last_status: list[dict[str, object]] = []
        self._stopped = False
        self._inbound_fds: list[int] = []

    # ----------------------------------------------------------------- public API

    @staticmethod
    def available() -> str | None:
        """``None`` if boxes can run here, else the reason with the fix (for instance
        ``"bubblewrap is not installed: apt-get install bubblewrap"``)."""
        return host.missing()

    @classmethod
    async def start(cls, spec: BoxSpec, root: Path) -> Box:
        """Start a box for ``spec``; ``root`` is a fresh host directory for its sockets, logs
        and status (its ancestors must be searchable by the sandbox user, and it must be short
        enough for socket paths: about 60 bytes). Raises :class:`SandboxError` with the reason
        when the box cannot start; nothing is left running then."""
        reason = host.missing()
        if reason is not None:
            raise SandboxError(reason)
        box = cls(spec, root)
        try:
            await box._start()
        except BaseException:
            await box.stop()
            raise
        return box

    async def wait(self, timeout: float | None = None) -> list[ProcessState]:  # noqa: ASYNC109
        """Wait until every process has exited (or the box was killed), then the states. After
        ``timeout`` seconds it returns the states as they are (some may still run)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._done.wait(), timeout)
        return self.states()

    def states(self) -> list[ProcessState]:
        """The state of every replica, in spec order."""
        rows = self._status()
        finished = self._done.is_set()
        if self._cgroup is not None and not self._stopped:
            self._oom_kills = self._cgroup.oom_kills()
            self._pids_refused = self._cgroup.pids_refused()
        note = f" (process limit {self.spec.limits.pids} reached)" if self._pids_refused else ""
        out = []
        for i, rep in enumerate(self._replicas):
            row = rows[i] if i < len(rows) else {}
            code = row.get("exit_code")
            sig = row.get("signal")
            ended = row.get("started") and not row.get("running")
            running = not finished and not ended and code is None
            oom = False
            if running:
                reason = "running"
            elif not ended and code is None:
                # Still running (or never reported) when the box ended: killed from outside.
                oom = self._kill_reason is None and self._oom_kills > 0
                reason = self._kill_reason or (self._oom_reason() if oom else "killed with the box")
                sig = sig or signal.SIGKILL
            elif row.get("held"):
                reason = "killed on request (to be started again)"
            elif sig is not None:
                reason = self._signal_reason(int(sig))
                oom = reason == self._oom_reason()
            elif not row.get("started"):
                reason = f"could not start (exit {code})"
            elif code == 128 + signal.SIGKILL and self._oom_kills:
                # the shell running the command saw its child killed by the OOM killer
                oom, reason = True, self._oom_reason()
            elif code == 128 + signal.SIGXFSZ:
                reason = self._signal_reason(signal.SIGXFSZ)
            else:
                reason = f"exited {code}"
            out.append(
                ProcessState(
                    name=rep.name,
                    replica=rep.replica,
                    running=running,
                    exit_code=None if running or not isinstance(code, int) else code,
                    signal=None if running or sig is None else int(sig),
                    oom_killed=oom,
                    reason=reason + ("" if running else note),
                    held=bool(row.get("held")) and not running,
                    restarts=int(row.get("restarts") or 0),
                )
            )
        return out

    def inbound(self, name: str, replica: int) -> Path:
        """The socket file reaching ``$PORT`` of that replica (a ``port=True`` process);
        connect with ``asyncio.open_unix_connection(path)``."""
        for rep in self._replicas:
            if rep.name == name and rep.replica == replica and rep.port is not None:
                return self.root / "net" / f"in-{name}-{replica}.sock"
        raise KeyError(f"no inbound socket for {name}[{replica}]")

    async def kill_process(self, name: str) -> ProcessFault:
        """SIGKILL the replica of process ``name`` started last (its whole process group), as
        an operator would: it stays down, reported ``held`` rather than crashed, until
        :meth:`start_process`. Returns when it has exited. Raises :class:`SandboxError` when no
        replica of ``name`` runs or the box does not answer."""
        requested = time.time()
        answer = await self._control({"kill": name})
        return ProcessFault(name, (int(answer["replica"]),), requested, float(answer["at"]))

    async def start_process(self, name: str) -> ProcessFault:
        """Start every replica of ``name`` that :meth:`kill_process` stopped, as a process
        manager restarts a killed process (systemd ``Restart=``, a Kubernetes pod)."""
        requested = time.time()
        answer = await self._control({"start": name})
        replicas = tuple(int(r) for r in answer["replicas"])
        return ProcessFault(name, replicas, requested, float(answer["at"]))

    async def _control(self, request: dict[str, str]) -> dict[str, Any]:
        """One request to the supervisor over ``net/control.sock``; its answer when ``ok``."""
        if self._stopped or self._done.is_set():
            raise SandboxError(f"box {self.id} is not running")
        try:
            async with asyncio.timeout(CONTROL_TIMEOUT_S):
                reader, writer = await asyncio.open_unix_connection(
                    self.root / "net" / "control.sock", limit=CONTROL_ANSWER_LIMIT
                )
                try:
                    writer.write(json.dumps(request).encode() + b"\n")
                    await writer.drain()
                    line = await reader.readline()
                finally:
                    writer.close()
            answer = json.loads(line)
        except (OSError, TimeoutError, ValueError) as exc:
            raise SandboxError(f"box {self.id} did not answer {request}: {exc!r}") from None
        if not isinstance(answer, dict) or answer.get("ok") is not True:
            error = answer.get("error") if isinstance(answer, dict) else answer
            raise SandboxError(f"box {self.id} refused {request}: {error}")
        return answer

    def log_path(self, name: str, replica: int = 0) -> Path:
        """The log file of that replica (stdout and stderr; raw, not masked)."""
        return self.root / "logs" / f"{name}-{replica}.log"

    def log_tail(self, name: str, replica: int = 0, lines: int = 40) -> str:
        """The last ``lines`` lines of that replica's log, every value of ``spec.secrets``
        replaced by ``•••`` (other environment values, such as ``RATE_LIMIT=20``, stay)."""
        try:
            data = _read_safely(self.log_path(name, replica), limit=256 * 1024)
        except OSError:
            return ""
        text = data.decode("utf-8", "replace")
        tail = "\n".join(text.splitlines()[-lines:])
        return _mask(tail, self.spec.secrets)

    async def stop(self) -> None:
        """Kill everything in the box, remove its cgroup, stop its relays. Idempotent."""
        if self._stopped:
            return
        if self._kill_reason is None and not self._done.is_set():
            self._kill_reason = "stopped"
        await self._kill()
        self._stopped = True
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()
        if self._relay is not None:
            await self._relay.stop()
        for fd in self._inbound_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._inbound_fds.clear()
        if self._cgroup is not None:
            self._cgroup.remove_now()
        self._done.set()

    @property
    def refused_hosts(self) -> list[str]:
        """What the registry proxy refused (``"host:port"``), for the build log."""
        return list(self._relay.refused) if self._relay else []

    @property
    def relay_pid(self) -> int | None:
        """The pid of this box's relay process (the host side of its forwards and registry
        proxy, see :mod:`provisioning.sandbox.relayd`), or ``None`` before it started."""
        return self._relay.pid if self._relay else None

    # ----------------------------------------------------------------- internals

    def _oom_reason(self) -> str:
        return f"killed: memory limit {self.spec.limits.memory_mb} MB"

    def _signal_reason(self, sig: int) -> str:
        if sig == signal.SIGKILL and self._oom_kills > 0:
            return self._oom_reason()
        if sig == signal.SIGKILL and self._kill_reason:
            return self._kill_reason
        if sig == signal.SIGXFSZ:
            return f"killed: disk limit {self.spec.limits.disk_mb} MB (file size)"
        if sig == signal.SIGXCPU:
            return "killed: CPU time limit"
        return f"killed by signal {sig}"

    def _status(self) -> list[dict[str, object]]:
        try:
            rows = json.loads(_read_safely(self.root / "state" / "status.json", 1 << 20))
            if isinstance(rows, list) and len(rows) == len(self._replicas):
                self._last_status = rows
        except (OSError, ValueError):
            pass
        return self._last_status

    async def _kill(self) -> None:
        if self._cgroup is not None:
            with contextlib.suppress(OSError):
                self._oom_kills = self._cgroup.oom_kills()
                self._pids_refused = self._cgroup.pids_refused()
            await self._cgroup.kill()
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()  # bwrap; its pid namespace dies with it
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 10)

    async def _kill_for(self, reason: str) -> None:
        if self._kill_reason is None and not self._done.is_set():
            self._kill_reason = reason
            log.info("box %s %s", self.id, reason)
        await self._kill()

    async def _start_relay(self, spec: BoxSpec, reg: registry.Registry | None) -> None:
        """The host side of the forwards (and the registry proxy), in its own process — not
        in the caller's event loop, which may be a grader's load generator."""
        self._relay = await RelayProcess.start(
            self.root / "net",
            spec.forwards,
            proxy=(PROXY_PORT, reg.hosts) if reg is not None else None,
            stderr=self.root / "relay.err",
            on_failure=self._relay_failed,
        )

    def _bind_inbound(self, rep: _Replica) -> int:
        """A listening socket file for ``rep``'s ``$PORT``, owner-only; its fd is kept in
        ``_inbound_fds`` (closed once the box holds it)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        path = self.root / "net" / f"in-{rep.name}-{rep.replica}.sock"
        sock.bind(str(path))
        os.chmod(path, 0o600)
        sock.listen(128)
        fd = sock.detach()
        self._inbound_fds.append(fd)
        return fd

    def _bind_control(self) -> int:
        """The listening socket file of the supervisor's control channel, owner-only (the box's
        user cannot connect to it); its fd is kept in ``_inbound_fds`` until the box holds it."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        path = self.root / "net" / "control.sock"
        sock.bind(str(path))
        os.chmod(path, 0o600)
        sock.listen(8)
        fd = sock.detach()
        self._inbound_fds.append(fd)
        return fd

    def _process_plan(
        self, rep: _Replica, interp: host.Interpreter, reg: registry.Registry | None
    ) -> dict[str, Any]:
        """What the in-box supervisor needs to run ``rep`` (its inbound socket aside)."""
        return {
            "name": rep.name,
            "replica": rep.replica,
            "command": rep.command,
            "env": self._process_env(rep, interp, reg),
            "port": rep.port,
            "log": f"/box/logs/{rep.name}-{rep.replica}.log",
        }

    def _relay_failed(self, reason: str) -> None:
        """The relay process could not be kept running: the box cannot reach its resources."""
        self._tasks.append(asyncio.create_task(self._kill_for(f"sandbox failed: {reason}")))

    def _plan_replicas(self) -> None:
        if self.spec.registry and PROXY_PORT in self.spec.forwards:
            raise SandboxError(
                f"port {PROXY_PORT} is the registry proxy's inside a build box; it cannot also "
                "be forwarded"
            )
        taken = {*self.spec.forwards, PROXY_PORT}
        port = FIRST_PORT
        for proc in self.spec.processes:
            for i in range(proc.replicas):
                assigned = None
                if proc.port:
                    while port in taken:
                        port += 1
                    assigned = port
                    taken.add(port)
                self._replicas.append(_Replica(proc.name, i, proc.command, assigned))

    def _layout(self, user: host.User) -> None:
        root = self.root
        if not self.spec.workdir.is_dir():
            raise SandboxError(f"workdir {self.spec.workdir} is not a directory")
        root.mkdir(parents=True, exist_ok=True)
        if any(root.iterdir()):
            raise SandboxError(f"box root {root} is not empty; give each box a fresh directory")
        root.chmod(0o755)
        for sub in ("net", "logs", "state", "etc"):
            (root / sub).mkdir(mode=0o755)
        for rep in self._replicas:
            check_socket_path(root / "net" / f"in-{rep.name}-{rep.replica}.sock")
        for port in (*self.spec.forwards, PROXY_PORT):
            check_socket_path(root / "net" / f"out-{port}.sock")
        check_socket_path(root / "net" / "control.sock")
        owned = []
        for rep in self._replicas:
            owned.append(self.log_path(rep.name, rep.replica))
        owned.append(root / "state" / "status.json")
        for path in owned:
            path.touch(mode=0o640)
            if user.dropped:
                os.chown(path, user.uid, user.gid)
        (root / "state" / "status.json").write_text("[]")
        etc = root / "etc"
        (etc / "passwd").write_text(
            f"root:x:0:0::/:/usr/sbin/nologin\n{user.name}:x:{user.uid}:{user.gid}::/tmp:/bin/sh\n"
            "nobody:x:65534:65534::/nonexistent:/usr/sbin/nologin\n"
        )
        (etc / "group").write_text(f"root:x:0:\n{user.name}:x:{user.gid}:\nnogroup:x:65534:\n")
        (etc / "hosts").write_text("127.0.0.1\tlocalhost\n::1\tlocalhost\n")
        init = resources.files("provisioning.sandbox").joinpath("boxinit.py").read_bytes()
        (root / "boxinit.py").write_bytes(init)
        if user.dropped:
            blocked = _blocking_dir(root, user.uid, user.gid)
            if blocked is not None:
                raise SandboxError(
                    f"{blocked} is not searchable by {user.name!r}, which runs the box; put box "
                    f"roots under world-searchable directories or run: chmod o+x {blocked}"
                )
            workdir = self.spec.workdir.resolve()
            blocked = _blocking_dir(workdir, user.uid, user.gid)
            if blocked is not None and blocked != workdir:
                raise SandboxError(
                    f"{blocked} is not searchable by {user.name!r}: the box cannot see its "
                    f"workdir {workdir}; run: chmod o+x {blocked}"
                )
            if self.spec.writable_app:
                for top, dirs, files in os.walk(workdir):
                    for name in [*dirs, *files]:
                        os.chown(os.path.join(top, name), user.uid, user.gid, follow_symlinks=False)
                os.chown(workdir, user.uid, user.gid)
            elif blocked == workdir:
                workdir.chmod(workdir.stat().st_mode | 0o005)

    def _bwrap_args(self, interp: host.Interpreter, reg: registry.Registry | None) -> list[str]:
        root = self.root
        limits = self.spec.limits
        args = [
            host.tool("bwrap"),
            "--unshare-all",
            "--unshare-user",
            "--die-with-parent",
            "--new-session",
            *(["--disable-userns"] if host.bwrap_supports("--disable-userns") else []),
            "--hostname",
            "sandbox",
            "--ro-bind",
            "/usr",
            "/usr",
        ]
        for top in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
            path = Path("/") / top
            if path.is_symlink():
                args += ["--symlink", os.readlink(path), f"/{top}"]
            elif path.is_dir():
                args += ["--ro-bind", str(path), f"/{top}"]
        for name in ETC_FILES:
            if Path("/etc", name).exists():
                args += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
        for name in ETC_DIRS:
            if Path("/etc", name).is_dir():
                args += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
        for name in ("passwd", "group", "hosts"):
            args += ["--ro-bind", str(root / "etc" / name), f"/etc/{name}"]
        args += [
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--size",
            str(limits.disk_mb * 1024 * 1024),
            "--tmpfs",
            "/tmp",
            "--perms",
            "0755",
            "--dir",
            "/box",
            "--ro-bind",
            str(interp.source),
            str(interp.prefix),
            "--bind" if self.spec.writable_app else "--ro-bind",
            str(self.spec.workdir.resolve()),
            "/app",
            "--ro-bind",
            str(root / "net"),
            "/box/net",
            "--bind",
            str(root / "logs"),
            "/box/logs",
            "--bind",
            str(root / "state"),
            "/box/state",
            "--ro-bind",
            str(root / "boxinit.py"),
            "/box/boxinit.py",
        ]
        if reg is not None:
            for path in reg.paths:
                args += ["--ro-bind", str(path), str(path)]
        args += [
            "--chdir",
            "/app",
            "--clearenv",
            "--setenv",
            "PATH",
            "/usr/bin:/bin",
            "--setenv",
            "LANG",
            "C.UTF-8",
            "--",
            interp.executable,
            "-I",
            "-S",
            "/box/boxinit.py",
        ]
        return args

    def _process_env(
        self, rep: _Replica, interp: host.Interpreter, reg: registry.Registry | None
    ) -> dict[str, str]:
        path = f"/app/.venv/bin:{interp.prefix}/bin:/usr/local/bin:/usr/bin:/bin"
        env = {
            "PATH": path,
            "HOME": "/tmp",
            "TMPDIR": "/tmp",
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
        }
        if reg is not None:
            env.update(reg.env(f"http://127.0.0.1:{PROXY_PORT}"))
        env.update(self.spec.env)
        if rep.port is not None:
            env["PORT"] = str(rep.port)
        return env

    def _command(self, user: host.User) -> list[str]:
        limits = self.spec.limits
        disk = limits.disk_mb * 1024 * 1024
        prlimit = [
            host.tool("prlimit"),
            f"--nofile={limits.open_files}:{limits.open_files}",
            f"--fsize={disk}:{disk}",
            "--core=0:0",
        ]
        if self._cgroup is None:
            mem = limits.memory_mb * 1024 * 1024
            prlimit += [f"--as={mem}:{mem}", f"--nproc={limits.pids}:{limits.pids}"]
            if limits.wall_s is not None:
                cpu = int(limits.wall_s * limits.cpus) + 1
                prlimit += [f"--cpu={cpu}:{cpu}"]
        drop = [host.tool("setpriv")]
        if user.dropped:
            drop += [f"--reuid={user.uid}", f"--regid={user.gid}", "--clear-groups"]
        drop += (
            ["--no-new-privs", "--inh-caps=-all", "--bounding-set=-all"]
            if user.dropped
            else ["--no-new-privs"]
        )
        join = 'for f in "$@"; do case "$f" in --) break;; esac; echo $$ > "$f"; shift; done; shift; exec "$@"'
        procs = [str(p) for p in (self._cgroup.procs_files if self._cgroup else [])]
        return ["/bin/sh", "-c", join, "sh", *procs, "--", *prlimit, "--", *drop, "--"]

    async def _start(self) -> None:
        spec = self.spec
        user = host.sandbox_user()
        interp = await asyncio.to_thread(host.interpreter)
        reg = await asyncio.to_thread(registry.host_registry) if spec.registry else None
        self._plan_replicas()
        await asyncio.to_thread(self._layout, user)
        try:
            if host.is_root():
                await asyncio.to_thread(cgroups.sweep)
            self._cgroup = await asyncio.to_thread(Cgroup.create, self.id, spec.limits)
            cgroup = self._cgroup.description
        except OSError as exc:
            if host.is_root():
                log.warning("box %s runs without a cgroup: %s", self.id, exc)
            cgroup = "none (rlimits only)"
        await self._start_relay(spec, reg)
        processes = []
        for rep in self._replicas:
            inbound_fd = None
            if rep.port is not None:
                inbound_fd = self._bind_inbound(rep)
                os.set_inheritable(inbound_fd, True)
            processes.append({**self._process_plan(rep, interp, reg), "inbound_fd": inbound_fd})
        forwards = list(spec.forwards) + ([PROXY_PORT] if reg is not None else [])
        control_fd = self._bind_control()
        os.set_inheritable(control_fd, True)
        plan = {
            "processes": processes,
            "forwards": forwards,
            "net": "/box/net",
            "status": "/box/state/status.json",
            "control_fd": control_fd,
        }
        argv = self._command(user) + self._bwrap_args(interp, reg)
        stderr_path = self.root / "logs" / "box.err"
        with open(stderr_path, "wb") as err:
            self._proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=err,
                pass_fds=self._inbound_fds,
                env={"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "LANG": "C.UTF-8"},
            )
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps(plan).encode())
        with contextlib.suppress(ConnectionError):
            await self._proc.stdin.drain()
        self._proc.stdin.close()
        with contextlib.suppress(ConnectionError):
            await self._proc.stdin.wait_closed()  # the box reads its plan up to end of file
        # The box holds the listening sockets now; ours would only steal connections.
        for fd in self._inbound_fds:
            os.close(fd)
        self._inbound_fds.clear()
        limits = spec.limits
        self.isolation = {
            "user": user.name,
            "net": "private (loopback only)",
            "cgroup": cgroup,
            "fs": "read-only system, private /tmp"
            + (", writable /app" if spec.writable_app else ""),
            "privileges": ("no capabilities, no_new_privs" if user.dropped else "no_new_privs")
            + (", no user namespaces" if host.bwrap_supports("--disable-userns") else ""),
            "limits": limits.describe(),
        }
        if self._cgroup is None:
            self.isolation["limits"] += " (per-process rlimits)"
        self._tasks.append(asyncio.create_task(self._reap()))
        if limits.wall_s is not None:
            self._tasks.append(asyncio.create_task(self._wall(limits.wall_s)))
        self._tasks.append(asyncio.create_task(self._watch_disk(limits)))
        log.info("box %s started: %s", self.id, self.isolation)

    async def _reap(self) -> None:
        assert self._proc is not None
        await self._proc.wait()
        self._status()
        if self._cgroup is not None:
            self._oom_kills = self._cgroup.oom_kills()
            self._pids_refused = self._cgroup.pids_refused()
        err = _read_safely(self.root / "logs" / "box.err", 64 * 1024).decode("utf-8", "replace")
        err = _mask(err.strip(), (*self.spec.secrets, *self.spec.env.values()))
        started = any(row.get("started") for row in self._last_status)
        if (
            self._proc.returncode
            and not started
            and self._kill_reason is None
            and not self._oom_kills
        ):
            last = err.splitlines()[-1] if err else f"exit status {self._proc.returncode}"
            self._kill_reason = f"sandbox failed: {last}"
        self._done.set()
        if self._proc.returncode and err and self._kill_reason is None:
            log.warning(
                "box %s ended with %s: %s",
                self.id,
                self._proc.returncode,
                err,
            )

    async def _wall(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        if not self._done.is_set():
            await self._kill_for(f"killed: wall time {seconds:g} s")

    async def _watch_disk(self, limits: Limits) -> None:
        """Kill the box when what it wrote on the host (logs, status, and ``/app`` for a box
        that writes it) grows beyond ``disk_mb``. Scans cost CPU on big trees (a venv), so
        the period grows with the time one scan takes."""
        allowed = limits.disk_mb * 1024 * 1024
        areas = [self.root / "logs", self.root / "state"]
        if self.spec.writable_app:
            areas.append(self.spec.workdir.resolve())

        def usage() -> int:
            return sum(_disk_usage(area) for area in areas)

        base = await asyncio.to_thread(usage)
        while not self._done.is_set():
            started = time.monotonic()
            used = await asyncio.to_thread(usage) - base
            if used > allowed:
                await self._kill_for(f"killed: disk limit {limits.disk_mb} MB")
                return
            await asyncio.sleep(max(DISK_POLL_S, 4 * (time.monotonic() - started)))
