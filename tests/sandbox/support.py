"""Running one command in a box and reading what it printed."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

from provisioning.sandbox import Box, BoxSpec, Limits, ProcessSpec, ProcessState


async def run(
    workspace: Path,
    boxes: list[Box],
    command: str,
    *,
    limits: Limits | None = None,
    timeout: float = 30,  # noqa: ASYNC109 - also the box's wall time
    **spec: object,
) -> tuple[Box, ProcessState, str]:
    """Run ``command`` as process ``t`` in a fresh box; its final state and its whole log."""
    box_spec = BoxSpec(
        workdir=workspace / "app",
        processes=(ProcessSpec("t", command),),
        limits=limits or Limits(wall_s=timeout),
        **spec,  # type: ignore[arg-type]
    )
    root = workspace / f"b{len(boxes)}"
    box = await Box.start(box_spec, root)
    boxes.append(box)
    states = await box.wait(timeout + 5)
    return box, states[0], box.log_tail("t", lines=1000)


def probe(workspace: Path, name: str, source: str) -> str:
    """Write a Python probe into the box's workdir; the command that runs it."""
    path = workspace / "app" / name
    path.write_text(source)
    path.chmod(0o644)
    return f"python {name}"


@contextlib.asynccontextmanager
async def listener() -> AsyncIterator[tuple[int, list[bytes]]]:
    """An echo server on host ``127.0.0.1`` (a free port); yields the port and what each
    connection sent."""
    seen: list[bytes] = []

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read(1024)
        seen.append(data)
        writer.write(data)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port, seen
    finally:
        server.close()
        await server.wait_closed()


def cgroup_dirs_left(box: Box) -> list[Path]:
    """Cgroup directories of ``box`` still present."""
    group = box._cgroup
    return [p for p in (group.dirs.values() if group else []) if os.path.exists(p)]
