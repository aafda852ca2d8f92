"""A box as a docker container, for hosts whose environments run on the docker backend
(``CRUSCIBLE_BACKEND=docker``). Same API and guarantees as :class:`provisioning.sandbox.Box`.

No bridge, no address: the container has ``network_mode="none"`` (only ``lo``), and its
forwards and inbound sockets cross into it as socket files, exactly like the bubblewrap box
(the host side in the box's relay process, :mod:`provisioning.sandbox.relayd`; inside,
:mod:`provisioning.sandbox.boxinit` with the mounted interpreter). A container cannot inherit
descriptors, so the supervisor gets its plan and the inbound listening sockets over
``<root>/net/handoff.sock`` (SCM_RIGHTS); the host accepts only the box's user there.

The container (Docker Engine API, ``POST /containers/create``:
https://docs.docker.com/reference/api/engine/version/v1.43/#tag/Container/operation/ContainerCreate):
read-only root (``--read-only``), a tmpfs ``/tmp`` of ``disk_mb``, ``cap_drop=["ALL"]``,
``security_opt=["no-new-privileges"]``, ``pids_limit``, ``mem_limit`` = ``memswap_limit`` (no
swap), ``nano_cpus``, ``nofile``/``fsize``/``core`` ulimits, the unprivileged sandbox user, and
gVisor's ``runsc`` runtime when the engine lists it with ``--host-uds`` (gVisor refuses host
socket files otherwise: https://gvisor.dev/docs/user_guide/compatibility/ ; then ``runc`` is
used and ``isolation["runtime"]`` says why). Containers carry the labels ``cruscible.sandbox``
(the box id) and ``cruscible.expires``; :func:`sweep` removes the expired ones.

The engine must run on this host (the box's root directory is bind-mounted). A container
outlives a caller that dies without :meth:`DockerBox.stop` (its relay process does not): it is
removed by the :func:`sweep` of a later box once ``wall_s`` + 5 min (1 h without a wall time)
have passed.

A submission built from its ``Dockerfile`` (:mod:`provisioning.hosted.docker_build`) runs
from its own image instead of the skeleton, under the same options; the supervisor is still
this host's interpreter (:mod:`provisioning.sandbox.learner_image`), each process gets the
image's environment and starts in its ``WORKDIR``; the image's ``USER`` is not used.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import docker
from docker.errors import APIError, DockerException, NotFound
from docker.types import Ulimit

from provisioning.sandbox import docker_image, host, learner_image, registry
from provisioning.sandbox.box import ETC_DIRS, ETC_FILES, PROXY_PORT, Box, _mask, _Replica
from provisioning.sandbox.cgroups import Cgroup
from provisioning.sandbox.learner_image import LearnerImage
from provisioning.sandbox.spec import BoxSpec, ProcessState, SandboxError

log = logging.getLogger(__name__)

LABEL_BOX = "cruscible.sandbox"
LABEL_EXPIRES = "cruscible.expires"
HANDOFF_TIMEOUT_S = 30.0
COUNTER_POLL_S = 0.2
CGROUP_ROOT = Path("/sys/fs/cgroup")
DEFAULT_EXPIRY_S = 3600.0


def _client() -> docker.DockerClient:
    return docker.from_env(timeout=60)


def sweep(client: docker.DockerClient, now: datetime | None = None) -> int:
    """Remove the box containers whose ``cruscible.expires`` has passed (left by a process
    that died); how many. Blocking."""
    now = now or datetime.now(UTC)
    removed = 0
    for container in client.containers.list(all=True, filters={"label": LABEL_BOX}):
        expires = container.labels.get(LABEL_EXPIRES, "")
        try:
            due = datetime.fromisoformat(expires) <= now
        except ValueError:
            due = True
        if due:
            with contextlib.suppress(NotFound, APIError):
                container.remove(force=True)
                removed += 1
    return removed


def runtime_for(info: dict[str, Any]) -> tuple[str | None, str]:
    """The runtime to ask for (``"runsc"`` or ``None``: the engine's default) and what to
    report, from ``docker info``."""
    runsc = (info.get("Runtimes") or {}).get("runsc")
    if runsc is None:
        return None, "runc (gVisor's runsc is not installed in the engine)"
    args = " ".join(runsc.get("runtimeArgs") or [])
    if "--host-uds" not in args:
        return None, "runc (runsc is configured without --host-uds, needed for socket files)"
    return "runsc", "runsc (gVisor)"


def _cgroup_of(pid: int) -> Cgroup | None:
    """The cgroup of host process ``pid`` (the container's), for its counters."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    dirs: dict[str, Path] = {}
    unified = None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            unified = CGROUP_ROOT / path.lstrip("/")
        for name in controllers.split(","):
            if name in ("memory", "pids", "cpu"):
                dirs[name] = CGROUP_ROOT / name / path.lstrip("/")
    if "memory" in dirs and "pids" in dirs:  # v1 (or hybrid, whose unified tree is empty)
        return Cgroup(dirs, "v1")
    return Cgroup({"unified": unified}, "v2") if unified is not None else None


class DockerBox(Box):
    """A running docker box; see :class:`provisioning.sandbox.Box` for the API.

    ``isolation`` also has ``"runtime"`` (``"runsc (gVisor)"`` or ``"runc (...why)"``).
    """

    def __init__(self, spec: BoxSpec, root: Path) -> None:
        super().__init__(spec, root)
        self._docker: docker.DockerClient | None = None
        self._container: Any = None
        self._counters: Cgroup | None = None
        self._learner: LearnerImage | None = None

    @staticmethod
    def available() -> str | None:
        """``None`` if docker boxes can run here, else the reason (no engine reachable)."""
        try:
            client = _client()
        except DockerException as exc:
            return f"no Docker engine reachable (set DOCKER_HOST): {exc}"
        try:
            client.ping()
        except (DockerException, OSError) as exc:
            return f"the Docker engine does not answer: {exc}"
        finally:
            client.close()
        return None

    @classmethod
    async def start(cls, spec: BoxSpec, root: Path) -> DockerBox:
        """Like :meth:`Box.start`, as a container. Raises :class:`SandboxError` with the reason
        when it cannot start; nothing is left running then."""
        reason = await asyncio.to_thread(cls.available)
        if reason is not None:
            raise SandboxError(reason)
        box = cls(spec, root)
        try:
            await box._start_container()
        except DockerException as exc:
            await box.stop()
            raise SandboxError(f"the Docker engine refused the box: {exc}") from exc
        except BaseException:
            await box.stop()
            raise
        return box

    def states(self) -> list[ProcessState]:
        """The state of every replica, in spec order."""
        self._read_counters()
        return super().states()

    async def stop(self) -> None:
        """Kill the container and remove it, stop the relays. Idempotent."""
        await super().stop()
        container, self._container = self._container, None
        if container is not None:
            with contextlib.suppress(NotFound, APIError):
                await asyncio.to_thread(container.remove, force=True, v=True)
        if self._docker is not None:
            self._docker.close()
            self._docker = None

    # ----------------------------------------------------------------- internals

    def _masked(self) -> tuple[str, ...]:
        return (*self.spec.secrets, *self.spec.env.values())

    def _read_counters(self) -> None:
        if self._counters is None or self._stopped:
            return
        with contextlib.suppress(OSError, KeyError):
            self._oom_kills = max(self._oom_kills, self._counters.oom_kills())
            self._pids_refused = max(self._pids_refused, self._counters.pids_refused())

    def _process_env(
        self, rep: _Replica, interp: host.Interpreter, reg: registry.Registry | None
    ) -> dict[str, str]:
        if self._learner is None:
            return super()._process_env(rep, interp, reg)
        env = {k: v for k, v in self.spec.env.items() if k != "VIRTUAL_ENV"}
        if rep.port is not None:
            env["PORT"] = str(rep.port)
        return self._learner.process_env(env)

    def _process_plan(
        self, rep: _Replica, interp: host.Interpreter, reg: registry.Registry | None
    ) -> dict[str, Any]:
        plan = super()._process_plan(rep, interp, reg)
        if self._learner is not None:
            plan["command"] = self._learner.wrap(rep.command)
        return plan

    def _learner_volumes(self, runtime: learner_image.HostRuntime) -> dict:
        """The mounts of a box in the learner's image: the supervisor's runtime and the
        box's directories; nothing over the image's own files but ``/etc/ld.so.preload``."""
        root = self.root
        volumes = dict(runtime.volumes)
        volumes[str(root / "etc" / "ld.so.preload")] = {"bind": "/etc/ld.so.preload", "mode": "ro"}
        volumes[str(root / "net")] = {"bind": "/box/net", "mode": "ro"}
        volumes[str(root / "logs")] = {"bind": "/box/logs", "mode": "rw"}
        volumes[str(root / "state")] = {"bind": "/box/state", "mode": "rw"}
        volumes[str(root / "boxinit.py")] = {"bind": "/box/boxinit.py", "mode": "ro"}
        return volumes

    def _volumes(self, interp: host.Interpreter, reg: registry.Registry | None) -> dict:
        root = self.root
        ro = "ro"
        volumes: dict[str, dict[str, str]] = {"/usr": {"bind": "/usr", "mode": ro}}
        for top, target in docker_image.host_tops().items():
            if target is None:
                volumes[f"/{top}"] = {"bind": f"/{top}", "mode": ro}
        for name in ETC_FILES:
            if Path("/etc", name).is_file():
                volumes[f"/etc/{name}"] = {"bind": f"/etc/{name}", "mode": ro}
        for name in ETC_DIRS:
            if Path("/etc", name).is_dir():
                volumes[f"/etc/{name}"] = {"bind": f"/etc/{name}", "mode": ro}
        for name in ("passwd", "group"):
            volumes[str(root / "etc" / name)] = {"bind": f"/etc/{name}", "mode": ro}
        volumes[str(interp.source)] = {"bind": str(interp.prefix), "mode": ro}
        volumes[str(self.spec.workdir.resolve())] = {
            "bind": "/app",
            "mode": "rw" if self.spec.writable_app else ro,
        }
        volumes[str(root / "net")] = {"bind": "/box/net", "mode": ro}
        volumes[str(root / "logs")] = {"bind": "/box/logs", "mode": "rw"}
        volumes[str(root / "state")] = {"bind": "/box/state", "mode": "rw"}
        volumes[str(root / "boxinit.py")] = {"bind": "/box/boxinit.py", "mode": ro}
        if reg is not None:
            for path in reg.paths:
                volumes[str(path)] = {"bind": str(path), "mode": ro}
        return volumes

    def _run(self, image: str, user: host.User, argv: list[str], volumes: dict) -> tuple[Any, str]:
        client = self._docker
        assert client is not None
        limits = self.spec.limits
        runtime, described = runtime_for(client.info())
        disk = limits.disk_mb * 1024 * 1024
        expiry = (limits.wall_s or DEFAULT_EXPIRY_S) + 300
        expires = datetime.now(UTC) + timedelta(seconds=expiry)
        kwargs: dict[str, Any] = {}
        if runtime is not None:
            kwargs["runtime"] = runtime
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
        if self._learner is not None:
            env = self._learner.supervisor_env()
        container = client.containers.run(
            image,
            entrypoint=argv[:1],
            command=[
                *argv[1:],
                "-I",
                "-S",
                "/box/boxinit.py",
                "--handoff",
                "/box/net/handoff.sock",
            ],
            name=f"cruscible-{self.id}",
            labels={LABEL_BOX: self.id, LABEL_EXPIRES: expires.isoformat()},
            user=f"{user.uid}:{user.gid}",
            network_mode="none",
            hostname="sandbox",
            read_only=True,
            tmpfs=dict.fromkeys(
                ("/tmp", *(self._learner.volumes if self._learner else ())),
                f"rw,nosuid,nodev,size={limits.disk_mb}m,mode=1777",
            ),
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            pids_limit=limits.pids,
            mem_limit=f"{limits.memory_mb}m",
            memswap_limit=f"{limits.memory_mb}m",
            nano_cpus=int(limits.cpus * 1e9),
            ulimits=[
                Ulimit(name="nofile", soft=limits.open_files, hard=limits.open_files),
                Ulimit(name="fsize", soft=disk, hard=disk),
                Ulimit(name="core", soft=0, hard=0),
            ],
            volumes=volumes,
            working_dir="/app",
            environment=env,
            detach=True,
            **kwargs,
        )
        return container, described

    async def _handoff(self, server: socket.socket, plan: dict, fds: list[int], uid: int) -> None:
        """Give the supervisor its plan and the inbound sockets (see the module docstring)."""
        loop = asyncio.get_running_loop()
        data = json.dumps(plan).encode()
        while True:
            conn, _ = await asyncio.wait_for(loop.sock_accept(server), HANDOFF_TIMEOUT_S)
            creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            _pid, peer_uid, _gid = struct.unpack("3i", creds)
            if peer_uid != uid:
                log.warning("box %s: handoff refused to uid %d", self.id, peer_uid)
                conn.close()
                continue
            break
        with conn:
            conn.setblocking(True)
            conn.settimeout(HANDOFF_TIMEOUT_S)
            header = len(data).to_bytes(8, "big")
            await asyncio.to_thread(socket.send_fds, conn, [header], fds)
            await asyncio.to_thread(conn.sendall, data)

    async def _start_container(self) -> None:
        spec = self.spec
        self._docker = await asyncio.to_thread(_client)
        await asyncio.to_thread(sweep, self._docker)
        await asyncio.to_thread(learner_image.sweep, self._docker)
        self._learner = await asyncio.to_thread(learner_image.find, self._docker, spec.workdir)
        if self._learner is None:
            image = await asyncio.to_thread(docker_image.ensure, self._docker)
        else:
            image = self._learner.ref
        user = host.sandbox_user()
        interp = await asyncio.to_thread(host.interpreter)
        reg = await asyncio.to_thread(registry.host_registry) if spec.registry else None
        self._plan_replicas()
        await asyncio.to_thread(self._layout, user)
        if self._learner is None:
            argv, volumes = [interp.executable], self._volumes(interp, reg)
        else:
            runtime = await asyncio.to_thread(learner_image.host_runtime, interp)
            argv, volumes = list(runtime.argv), self._learner_volumes(runtime)
            (self.root / "etc" / "ld.so.preload").write_bytes(b"")
        await self._start_relay(spec, reg)
        processes = []
        for rep in self._replicas:
            slot = None
            if rep.port is not None:
                slot = len(self._inbound_fds)
                self._bind_inbound(rep)
            processes.append({**self._process_plan(rep, interp, reg), "inbound_slot": slot})
        control_slot = len(self._inbound_fds)
        self._bind_control()
        plan = {
            "processes": processes,
            "forwards": list(spec.forwards) + ([PROXY_PORT] if reg is not None else []),
            "net": "/box/net",
            "status": "/box/state/status.json",
            "control_slot": control_slot,
        }
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        handoff = self.root / "net" / "handoff.sock"
        server.bind(str(handoff))
        os.chmod(handoff, 0o666)
        server.listen(4)
        server.setblocking(False)
        try:
            self._container, described = await asyncio.to_thread(
                self._run, image, user, argv, volumes
            )
            try:
                await self._handoff(server, plan, self._inbound_fds, user.uid)
            except (TimeoutError, OSError) as exc:
                logs = await asyncio.to_thread(self._container.logs, tail=5)
                text = _mask(logs.decode(errors="replace").strip(), self._masked())
                raise SandboxError(f"the docker box did not start: {text}") from exc
        finally:
            server.close()
            handoff.unlink(missing_ok=True)
        # The box holds the listening sockets now; ours would only steal connections.
        for fd in self._inbound_fds:
            os.close(fd)
        self._inbound_fds.clear()
        await asyncio.to_thread(self._container.reload)
        pid = self._container.attrs.get("State", {}).get("Pid") or 0
        self._counters = _cgroup_of(pid) if pid else None
        limits = spec.limits
        self.isolation = {
            "user": user.name,
            "net": "none (loopback only)",
            "runtime": described,
            "cgroup": "docker",
            "fs": "read-only root, private /tmp" + (", writable /app" if spec.writable_app else ""),
            "privileges": "no capabilities, no-new-privileges",
            "limits": limits.describe(),
        }
        if self._learner is not None:
            self.isolation["image"] = self._learner.ref
            self.isolation["fs"] = "the image's files read-only, private /tmp"
        self._tasks.append(asyncio.create_task(self._reap_container()))
        self._tasks.append(asyncio.create_task(self._poll_counters()))
        if limits.wall_s is not None:
            self._tasks.append(asyncio.create_task(self._wall(limits.wall_s)))
        self._tasks.append(asyncio.create_task(self._watch_disk(limits)))
        log.info("docker box %s started: %s", self.id, self.isolation)

    async def _poll_counters(self) -> None:
        while not self._done.is_set():
            self._read_counters()
            await asyncio.sleep(COUNTER_POLL_S)

    async def _reap_container(self) -> None:
        container = self._container
        assert container is not None
        with contextlib.suppress(DockerException, OSError):
            await asyncio.to_thread(container.wait)
        self._status()
        with contextlib.suppress(DockerException, OSError):
            await asyncio.to_thread(container.reload)
            state = container.attrs.get("State", {})
            if state.get("OOMKilled"):
                self._oom_kills = max(self._oom_kills, 1)
        self._done.set()

    async def _kill(self) -> None:
        self._read_counters()
        container = self._container
        if container is None:
            return
        with contextlib.suppress(NotFound, APIError):
            await asyncio.to_thread(container.kill)
        with contextlib.suppress(DockerException, OSError):
            await asyncio.wait_for(asyncio.to_thread(container.wait), 10)
