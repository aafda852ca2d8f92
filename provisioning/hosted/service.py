"""Run a built submission next to its environment: a run box with the manifest's processes, the
environment's resource ports forwarded in, its bundle in their environment, the challenge's caps;
a round-robin balancer in front of the web replicas; ready when ``GET /healthz`` answers 200
through the balancer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from provisioning.environment import Environment
from provisioning.faults import PROCESS_PREFIX, FaultAction, FaultRecord
from provisioning.hosted.balancer import Balancer, start_balancer
from provisioning.hosted.manifest import Manifest
from provisioning.sandbox import Box, BoxSpec, Limits, ProcessSpec, ProcessState, box_class

READY_TIMEOUT_S = 60.0
LOG_LINES = 20
MIN_RUN_S = 1.0  # an environment at its TTL still gets a box that ends at once, not none
WALL_TIME = "killed: wall time"  # the box's reason when its wall-time cap fired
WALL_TIME_NOTE = (
    "the run's time cap ended it: the challenge's hosted.run_s, else your environment's TTL"
)
SECRET_HINTS = ("PASSWORD", "SECRET", "TOKEN", "KEY", "_URL")


class NotReady(RuntimeError):
    """The service did not answer ``/healthz`` in time; ``str()`` carries each process's state
    and last log lines (secrets masked)."""


def bundle_secrets(env: Environment) -> tuple[str, ...]:
    """Values to mask in anything shown: the environment's credentials and every bundle value
    that is a URL, token, key or password."""
    values = set(env.secrets())
    values.update(
        v for k, v in env.bundle.items() if v and any(h in k.upper() for h in SECRET_HINTS)
    )
    return tuple(sorted(values, key=len, reverse=True))


@dataclass
class HostedService:
    """A running submission: ``url`` is the balancer (what gets graded)."""

    box: Box
    balancer: Balancer
    manifest: Manifest

    @property
    def url(self) -> str:
        return self.balancer.url

    def states(self) -> list[ProcessState]:
        return self.box.states()

    def stopped(self) -> list[ProcessState]:
        """Replicas that are no longer running (crashed, killed or exited), less those killed
        on request and not started yet (:meth:`fault`): those did not crash."""
        return [s for s in self.states() if not s.running and not s.held]

    @property
    def process_names(self) -> frozenset[str]:
        """The manifest's process names (what :meth:`fault` can kill)."""
        return frozenset(p.name for p in self.manifest.processes)

    async def fault(self, name: str, action: FaultAction) -> FaultRecord:
        """``kill`` the replica of process ``name`` started last (SIGKILL, its children too),
        or ``start`` what was killed, as a process manager would; the record's ``resource`` is
        ``process:<name>`` and its ``detail`` the replicas hit. Raises ``ValueError`` for
        another action, :class:`provisioning.sandbox.SandboxError` when it cannot be done."""
        if action == FaultAction.KILL:
            done = await self.box.kill_process(name)
        elif action == FaultAction.START:
            done = await self.box.start_process(name)
        else:
            raise ValueError(f"a process can be killed or started, not {action}")
        replicas = ", ".join(f"{name}[{i}]" for i in done.replicas)
        return FaultRecord(
            self.box.id,
            PROCESS_PREFIX + name,
            action,
            done.requested_at,
            max(done.requested_at, done.effective_at),
            detail=replicas,
        )

    def describe(self, states: Sequence[ProcessState] | None = None, lines: int = LOG_LINES) -> str:
        """Each replica's state and last log lines, secrets masked (for the learner)."""
        parts = []
        for s in states if states is not None else self.states():
            tail = self.box.log_tail(s.name, s.replica, lines=lines).rstrip()
            head = f"{s.name}[{s.replica}]: {s.reason}"
            if s.reason.startswith(WALL_TIME):
                head += f" ({WALL_TIME_NOTE})"
            parts.append(f"{head}\n{tail}" if tail else f"{head} (no output)")
        return "\n\n".join(parts)

    async def stop(self) -> None:
        """Stop the balancer, then the box. Idempotent."""
        await self.balancer.stop()
        await self.box.stop()


LOOPBACK = {"127.0.0.1", "localhost"}
PLAIN_SCHEMES = {"rediss": "redis", "tls": "nats", "https": "http"}
CA_VARS = ("CA_CERT_PEM", "CA_CERT_FILE", "PGSSLROOTCERT", "AWS_CA_BUNDLE")


def _to_loopback(value: str, public: tuple[str, int], port: int) -> str:
    """A bundle URL naming the public listener ``public`` as the same URL on the loopback
    server's ``port``, in plain text (its TLS query, ``sslmode``, dropped); anything else as is."""
    url = urlsplit(value)
    try:
        if (url.hostname, url.port) != public:
            return value
    except ValueError:  # not a URL with a port
        return value
    user = url.netloc.rpartition("@")[0]
    netloc = f"{user}@127.0.0.1:{port}" if user else f"127.0.0.1:{port}"
    scheme = PLAIN_SCHEMES.get(url.scheme, url.scheme)
    return urlunsplit((scheme, netloc, url.path, "", url.fragment))


def loopback_bundle(env: Environment) -> tuple[dict[str, str], list[int]]:
    """The bundle as code run next to ``env`` uses it, and the loopback ports to forward in.

    An exposed environment (``CRUSCIBLE_PUBLIC_HOST``, provisioning.tls) gives learners its
    public TLS listeners; a sandbox reaches only forwarded loopback ports, so its bundle names
    each server's loopback port in plain text, with the same credentials (and without the CA
    variables). Raises ``ValueError`` for a resource on another host that is not exposed.
    """
    bundle, ports, exposed = dict(env.bundle), [], False
    for info in env.resources.values():
        public = info.extra.get("ports", {}).get("public")
        if info.host not in LOOPBACK:
            if public is None:
                raise ValueError(
                    f"{info.kind.value} listens on {info.host}, not on loopback: submissions "
                    "run next to local environments only"
                )
            exposed = True
            for key, value in info.learner.items():
                if key not in CA_VARS:
                    bundle[key] = _to_loopback(value, (info.host, public), info.port)
        ports.append(info.port)
    if exposed:
        for key in CA_VARS:
            bundle.pop(key, None)
    return bundle, ports


def run_spec(
    workdir: Path,
    manifest: Manifest,
    env: Environment,
    limits: Limits,
    extra_env: Mapping[str, str] | None = None,
) -> BoxSpec:
    """The run box for ``manifest`` next to ``env``: its bundle in every process's environment,
    its resources' loopback ports forwarded in (at the same ``127.0.0.1`` port; an exposed
    environment's bundle is rewritten to them: :func:`loopback_bundle`), its wall time capped
    (:func:`run_wall_s`)."""
    bundle, ports = loopback_bundle(env)
    processes = tuple(
        ProcessSpec(p.name, p.command, replicas=p.replicas, port=p.web) for p in manifest.processes
    )
    return BoxSpec(
        workdir=workdir,
        processes=processes,
        env={"VIRTUAL_ENV": "/app/.venv", **bundle, **(extra_env or {})},
        forwards=tuple(dict.fromkeys(ports)),
        limits=replace(limits, wall_s=run_wall_s(limits, env)),
        secrets=bundle_secrets(env),
    )


def run_wall_s(limits: Limits, env: Environment, now: datetime | None = None) -> float:
    """Seconds the run box may live: ``limits.wall_s`` (the challenge's ``hosted.run_s``) when
    set, never beyond the environment's TTL (``env.expires_at``): code run next to an
    environment ends with it. Whole seconds (what the learner reads), at least
    :data:`MIN_RUN_S`."""
    left = (env.expires_at - (now or datetime.now(UTC))).total_seconds()
    wall = left if limits.wall_s is None else min(limits.wall_s, left)
    return max(MIN_RUN_S, float(int(wall)))


async def _healthy(http: aiohttp.ClientSession, url: str) -> bool:
    with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
        async with http.get(url) as resp:
            return resp.status == 200
    return False


async def _ready(service: HostedService, deadline_s: float) -> bool:
    """Poll until every web replica answers ``/healthz`` with 200 on its own socket, then once
    through the balancer; ``False`` when every web replica stopped, or at the deadline."""
    end = time.monotonic() + deadline_s
    timeout = aiohttp.ClientTimeout(total=2.0)
    web = service.manifest.web
    waiting = set(range(web.replicas))
    async with aiohttp.ClientSession(timeout=timeout) as http:
        while time.monotonic() < end:
            for i in sorted(waiting):
                connector = aiohttp.UnixConnector(path=str(service.box.inbound(web.name, i)))
                async with aiohttp.ClientSession(connector=connector, timeout=timeout) as one:
                    if await _healthy(one, "http://localhost/healthz"):
                        waiting.discard(i)
            if not waiting and await _healthy(http, f"{service.url}/healthz"):
                return True
            states = [s for s in service.states() if s.name == web.name]
            if states and not any(s.running for s in states):
                return False
            await asyncio.sleep(0.25)
    return False


async def start_service(
    workdir: Path,
    manifest: Manifest,
    env: Environment,
    *,
    box_root: Path,
    limits: Limits,
    ready_timeout_s: float = READY_TIMEOUT_S,
) -> HostedService:
    """Start the submission built in ``workdir`` next to ``env`` and wait until it is ready.

    Raises :class:`NotReady` (with every process's state and log tail) when ``/healthz`` does
    not answer 200 through the balancer within ``ready_timeout_s``; nothing is left running
    then. :class:`provisioning.sandbox.SandboxError` when no box can start here.
    """
    box = await box_class(env.backend).start(run_spec(workdir, manifest, env, limits), box_root)
    try:
        web = manifest.web
        sockets = [box.inbound(web.name, i) for i in range(web.replicas)]
        balancer = await start_balancer(sockets)
    except BaseException:
        await box.stop()
        raise
    service = HostedService(box, balancer, manifest)
    try:
        ok = await _ready(service, ready_timeout_s)
    except BaseException:
        await service.stop()
        raise
    if not ok:
        report = service.describe()
        stopped = [s for s in service.stopped() if s.name == web.name]
        await service.stop()
        if len(stopped) == web.replicas:  # the first line names why (`results` shows it)
            why = "; ".join(f"{s.name}[{s.replica}] {s.reason}" for s in stopped)
            head = f"the service did not answer GET /healthz: every web replica stopped ({why})"
        else:
            head = (
                f"the service did not answer GET /healthz with 200 within {ready_timeout_s:g} s "
                f"(through the balancer to {web.replicas} web replica(s))"
            )
        raise NotReady(f"{head}:\n\n{report}")
    return service
