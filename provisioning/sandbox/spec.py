"""What a box runs (:class:`BoxSpec`, :class:`ProcessSpec`) and what became of it
(:class:`ProcessState`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from provisioning.sandbox.limits import Limits

_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_REPLICAS = 16


class SandboxError(Exception):
    """A box cannot be started or used; the message says why and what to do."""


@dataclass(frozen=True)
class ProcessSpec:
    """One kind of process in a box.

    ``command`` runs through ``/bin/sh -c`` inside the box with ``/app`` as working directory.
    With ``port=True`` each replica gets its own ``$PORT`` (inside the box's private network)
    and an inbound socket (:meth:`Box.inbound`) that reaches it.
    """

    name: str
    command: str
    replicas: int = 1
    port: bool = False

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise SandboxError(
                f"process name {self.name!r} must be lowercase letters, digits, '-' or '_' "
                "(at most 32, starting with a letter)"
            )
        if not self.command.strip():
            raise SandboxError(f"process {self.name!r} has an empty command")
        if "\0" in self.command:
            raise SandboxError(f"process {self.name!r}: the command contains a NUL byte")
        if not 1 <= self.replicas <= MAX_REPLICAS:
            raise SandboxError(
                f"process {self.name!r}: replicas must be 1..{MAX_REPLICAS}, got {self.replicas}"
            )


@dataclass(frozen=True)
class BoxSpec:
    """Everything a box is.

    - ``workdir``: host directory mounted at ``/app`` (read-only unless ``writable_app``).
    - ``env``: extra environment of every process (e.g. the connection bundle); never logged.
    - ``forwards``: host ``127.0.0.1`` ports reachable inside the box at the same
      ``127.0.0.1:<port>``; nothing else outside the box is reachable.
    - ``registry``: forward the package-registry proxy and set ``PIP_*``/``HTTPS_PROXY``
      (build boxes).
    - ``secrets``: values masked in every log text a :class:`Box` returns.
    """

    workdir: Path
    processes: tuple[ProcessSpec, ...]
    env: dict[str, str] = field(default_factory=dict)
    forwards: tuple[int, ...] = ()
    limits: Limits = Limits()
    writable_app: bool = False
    registry: bool = False
    secrets: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.processes:
            raise SandboxError("a box needs at least one process")
        names = [p.name for p in self.processes]
        if len(set(names)) != len(names):
            raise SandboxError(f"process names must be distinct, got {names}")
        for key, value in self.env.items():
            if not _ENV_NAME.match(key):
                raise SandboxError(f"environment variable name {key!r} is not valid")
            if "\0" in value:
                raise SandboxError(f"environment variable {key} contains a NUL byte")
        for port in self.forwards:
            if not 1 <= port <= 65535:
                raise SandboxError(f"forwarded port {port} is out of range")
        if len(set(self.forwards)) != len(self.forwards):
            raise SandboxError(f"forwarded ports must be distinct, got {self.forwards}")


@dataclass
class ProcessState:
    """One replica of one process.

    ``exit_code`` and ``signal`` are ``None`` while it runs; ``reason`` is for humans:
    ``"running"``, ``"exited 0"``, ``"exited 1"``, ``"killed by signal 9"``,
    ``"killed: memory limit 512 MB"``, ``"killed: wall time 600 s"``,
    ``"killed: disk limit 512 MB"`` (what a build added beyond the cap),
    ``"killed: disk limit 512 MB (file size)"`` (one file beyond the cap), ``"stopped"``,
    ``"killed with the box"``, ``"could not start (exit 127)"``, ``"sandbox failed: <why>"``;
    it may end with a note such as ``"(process limit 256 reached)"``. ``oom_killed`` comes from
    the cgroup's own counter (the box cannot fake it). ``held``: killed on request
    (``Box.kill_process``, reason ``"killed on request (to be started again)"``), not a crash;
    ``restarts``: how many times it was started again (``Box.start_process``).
    """

    name: str
    replica: int
    running: bool
    exit_code: int | None
    signal: int | None
    oom_killed: bool
    reason: str
    held: bool = False
    restarts: int = 0


@dataclass(frozen=True)
class ProcessFault:
    """A kill or start of process ``name`` on request: the replicas it hit, when it was asked
    for and when it had taken effect (epoch seconds; a kill, once the replica had exited)."""

    name: str
    replicas: tuple[int, ...]
    requested_at: float
    effective_at: float
