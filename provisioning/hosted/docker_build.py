"""Build a submission from its ``Dockerfile`` on the Docker engine (docker backend only).

The engine's classic builder (Docker Engine API ``POST /build``:
https://docs.docker.com/reference/api/engine/version/v1.43/#tag/Image/operation/ImageBuild)
builds the submission's folder as the context, with:

- every base image checked on the engine first (:func:`provisioning.hosted.dockerfile.base_images`):
  a missing one is refused by name, nothing is ever pulled (``pull=False``, and the builder
  would pull only what is missing);
- no network for ``RUN`` steps (``network_mode="none"``), unless the operator names a Docker
  network in ``CRUSCIBLE_DOCKER_BUILD_NETWORK`` (one whose only way out is their registry: this
  module does not filter it);
- no layer cache (``nocache``): one learner's ``RUN`` output never feeds another's image;
- memory (no swap) as a Python build gets it, ``max(memory_mb, 1024)`` MB, at creation; the
  builder takes no pids or CPU quota, so each step's container gets ``pids`` and ``cpus`` as
  soon as the log names it (``POST /containers/{id}/update``): best effort, a step that forks
  at once may have made hundreds of processes by then (memory and the wall time still bound
  it); it has no disk quota either, so
  what the build added is checked against ``max(disk_mb, 1024)`` MB afterwards;
- a wall time: at ``timeout_s`` the step's container is killed (the ``Running in`` line names
  it) and the build fails.

A ``RUN`` step can print a ``Running in`` line of its own: a container is capped or killed only
when it carries this build's marker, a random ``CpuShares`` weight in [512, 1024) (at most the
default 1024 of the boxes that are graded) that the step cannot change.

The log streams into ``log_path`` line by line as the engine sends it. The image is tagged and
labelled for the submission (:mod:`provisioning.sandbox.learner_image`), where the docker box
finds it; it is removed once the submission's workdir is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import docker
from docker.errors import APIError, DockerException, ImageNotFound

from provisioning.hosted.dockerfile import DockerfileError, base_images
from provisioning.hosted.manifest import IMAGE_COMMAND, MANIFEST, Manifest
from provisioning.sandbox import Limits, SandboxError, learner_image
from provisioning.sandbox.learner_image import LearnerImage

log = logging.getLogger(__name__)

NETWORK_ENV = "CRUSCIBLE_DOCKER_BUILD_NETWORK"
MIN_MEMORY_MB = 1024
MIN_DISK_MB = 1024
TAIL_LINES = 30
KILL_GRACE_S = 30.0
_RUNNING_IN = re.compile(r"---> Running in ([0-9a-f]{12,64})")


class DockerBuildError(RuntimeError):
    """The image could not be built; ``str()`` is the reason for the learner."""


def _field(reason: str) -> DockerBuildError:
    return DockerBuildError(f"{MANIFEST}: build.dockerfile: {reason}")


CPU_PERIOD_US = 100_000
SHARES = 1024  # the engine's default CPU weight; a build's marker is within [SHARES / 2, SHARES)


def _ours(client: docker.DockerClient, container: str, marker: int) -> bool:
    """Whether ``container`` is a step of the build whose marker is ``marker``. Blocking."""
    try:
        shares = client.api.inspect_container(container)["HostConfig"].get("CpuShares")
    except DockerException:
        return False
    return shares == marker


def _cap_step(client: docker.DockerClient, container: str, limits: Limits, marker: int) -> bool:
    """Give a build step's container the box's pids and CPU caps (Docker Engine API
    ``ContainerUpdate``: the SDK's ``update_container`` lacks ``PidsLimit``); whether it is a
    step of this build (a container not of this build is left alone). Blocking."""
    if not _ours(client, container, marker):
        return False
    api = client.api
    data = {
        "PidsLimit": limits.pids,
        "CpuPeriod": CPU_PERIOD_US,
        "CpuQuota": int(limits.cpus * CPU_PERIOD_US),
    }
    try:
        api._result(api._post_json(api._url("/containers/{0}/update", container), data=data))
    except DockerException as exc:  # the step ended already
        log.info("build step %s not capped: %s", container[:12], exc)
    return True


def _missing_bases(client: docker.DockerClient, refs: Iterable[str]) -> list[str]:
    missing = []
    for ref in refs:
        try:
            client.images.get(ref)
        except ImageNotFound:
            missing.append(ref)
    return missing


def _offer(client: docker.DockerClient, limit: int = 8) -> str:
    """Some images a learner may build FROM here (none of ours), for the refusal."""
    tags = sorted(
        tag
        for image in client.images.list()
        for tag in image.tags
        if not tag.startswith(("cruscible/", "<none>"))
    )
    return ", ".join(tags[:limit]) if tags else "none"


class _Stream:
    """The build's output: appended to the log file, its tail kept, the container of the
    running step noted (what the wall time kills)."""

    def __init__(self, log_path: Path, on_step: Callable[[str], bool]) -> None:
        """``on_step`` is called (in the streaming thread) with each container id a
        ``Running in`` line names; it says whether that is a step of this build."""
        self.log_path = log_path
        self.on_step = on_step
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.step_container: str | None = None
        self.error: str | None = None

    def consume(self, chunks: Iterable[dict[str, Any]]) -> None:
        """Write each chunk of ``POST /build``'s JSON stream (blocking; in a thread)."""
        with open(self.log_path, "a", encoding="utf-8", errors="replace") as out:
            for chunk in chunks:
                if "error" in chunk:
                    self.error = str(chunk["error"]).strip()
                    text = self.error + "\n"
                elif "status" in chunk:
                    text = f"{chunk['status']}\n"
                else:
                    text = str(chunk.get("stream") or "")
                if not text:
                    continue
                out.write(text)
                out.flush()
                self.tail.extend(line for line in text.splitlines() if line.strip())
                if (found := _RUNNING_IN.search(text)) and self.on_step(found.group(1)):
                    self.step_container = found.group(1)


async def build_image(
    workdir: Path,
    manifest: Manifest,
    *,
    log_path: Path,
    limits: Limits | None = None,
    timeout_s: float,
) -> LearnerImage:
    """Build ``workdir`` with its Dockerfile ``manifest.build_file`` into the submission's image.

    Raises :class:`DockerBuildError` (``cruscible.toml: build.dockerfile: reason``, or the
    build's failure with its last log lines), :class:`SandboxError` when no engine answers.
    """
    path = workdir / manifest.build_file
    if not path.resolve().is_relative_to(workdir.resolve()):
        raise _field(f"{manifest.build_file} must be a file inside the submission")
    try:
        text = path.read_text(encoding="utf-8")
        bases = base_images(text)
    except (OSError, UnicodeDecodeError) as exc:
        raise _field(f"cannot be read ({exc})") from None
    except DockerfileError as exc:
        raise _field(str(exc)) from None
    try:
        client = docker.from_env(timeout=max(60, int(timeout_s) + 60))
        client.ping()
    except (DockerException, OSError) as exc:
        raise SandboxError(f"no Docker engine answers (set DOCKER_HOST): {exc}") from exc
    try:
        return await _build(client, workdir, manifest, bases, log_path, limits, timeout_s)
    finally:
        client.close()


async def _build(
    client: docker.DockerClient,
    workdir: Path,
    manifest: Manifest,
    bases: list[str],
    log_path: Path,
    limits: Limits | None,
    timeout_s: float,
) -> LearnerImage:
    await asyncio.to_thread(learner_image.sweep, client)
    missing = await asyncio.to_thread(_missing_bases, client, bases)
    if missing:
        offered = await asyncio.to_thread(_offer, client)
        raise _field(
            f"the base image {', '.join(missing)} is not on this host, and nothing is pulled "
            f"here (no registry): build FROM an image the operator has loaded (here: {offered})"
        )
    await asyncio.to_thread(learner_image.remove, client, workdir)
    base = limits or Limits()
    memory = max(base.memory_mb, MIN_MEMORY_MB) * 1024 * 1024
    log_path.parent.mkdir(parents=True, exist_ok=True)
    marker = SHARES // 2 + secrets.randbelow(SHARES // 2)
    stream = _Stream(log_path, lambda step: _cap_step(client, step, base, marker))
    tag = learner_image.tag_for(workdir)
    options: dict[str, Any] = dict(
        path=str(workdir),
        dockerfile=manifest.build_file,
        tag=tag,
        labels=learner_image.labels_for(workdir),
        rm=True,
        forcerm=True,
        nocache=True,
        pull=False,
        network_mode=os.environ.get(NETWORK_ENV) or "none",
        container_limits={"memory": memory, "memswap": memory, "cpushares": marker},
        use_config_proxy=False,
        decode=True,
    )

    def consume() -> None:  # sending the context too is blocking
        stream.consume(client.api.build(**options))

    worker = asyncio.create_task(asyncio.to_thread(consume))
    try:
        await asyncio.wait_for(asyncio.shield(worker), timeout_s)
        why = stream.error
    except TimeoutError:
        why = f"killed: wall time {timeout_s:g} s"
        await _stop_step(client, stream, worker)
    except (DockerException, OSError) as exc:
        why = f"the engine: {exc}"
    if why is None:
        image = await asyncio.to_thread(_inspect, client, tag)
        why = await asyncio.to_thread(_check, image, manifest, client, bases, base)
        if why is None:
            return image
    with contextlib.suppress(DockerException):
        await asyncio.to_thread(learner_image.remove, client, workdir)
    tail = "\n".join(stream.tail)
    if why.startswith(MANIFEST):
        raise DockerBuildError(why)
    raise DockerBuildError(f"the build failed ({why}); its last lines:\n{tail}")


async def _stop_step(
    client: docker.DockerClient, stream: _Stream, worker: asyncio.Task[None]
) -> None:
    """Kill the container of the running step, so that the build ends; wait for the stream."""
    if stream.step_container is not None:
        with contextlib.suppress(DockerException):
            await asyncio.to_thread(client.api.kill, stream.step_container)
    try:
        await asyncio.wait_for(worker, KILL_GRACE_S)
    except (TimeoutError, DockerException, OSError):
        log.warning("docker build still streaming %.0f s after its kill", KILL_GRACE_S)
        client.close()


def _inspect(client: docker.DockerClient, tag: str) -> LearnerImage:
    return LearnerImage.from_attrs(client.images.get(tag).attrs)


def _size(client: docker.DockerClient, ref: str) -> int:
    with contextlib.suppress(ImageNotFound, APIError):
        return int(client.images.get(ref).attrs.get("Size") or 0)
    return 0


def _check(
    image: LearnerImage,
    manifest: Manifest,
    client: docker.DockerClient,
    bases: list[str],
    limits: Limits,
) -> str | None:
    """Why the built image cannot be run as ``manifest`` says (``None``: it can). Blocking."""
    for process in manifest.processes:
        if process.command == IMAGE_COMMAND and not image.command:
            return (
                f"{MANIFEST}: processes.{process.name}.command: required, the image has neither "
                "CMD nor ENTRYPOINT"
            )
    allowed = max(limits.disk_mb, MIN_DISK_MB) * 1024 * 1024
    added = _size(client, image.ref) - max((_size(client, b) for b in bases), default=0)
    if added > allowed:
        return f"killed: disk limit {max(limits.disk_mb, MIN_DISK_MB)} MB (the image added more)"
    return None
