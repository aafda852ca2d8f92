"""Bad box specs get a clear error and leave nothing behind."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from provisioning.sandbox import Box, BoxSpec, Limits, ProcessSpec, SandboxError
from provisioning.sandbox.cgroups import ROOT


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ProcessSpec("Web!", "x"), "process name 'Web!'"),
        (lambda: ProcessSpec("web", "  "), "empty command"),
        (lambda: ProcessSpec("web", "x", replicas=0), "replicas must be 1..16"),
        (lambda: BoxSpec(Path("/tmp"), ()), "at least one process"),
        (
            lambda: BoxSpec(Path("/tmp"), (ProcessSpec("a", "x"), ProcessSpec("a", "y"))),
            "distinct",
        ),
        (lambda: BoxSpec(Path("/tmp"), (ProcessSpec("a", "x"),), env={"A-B": "1"}), "'A-B'"),
        (lambda: BoxSpec(Path("/tmp"), (ProcessSpec("a", "x"),), forwards=(0,)), "port 0"),
    ],
)
def test_bad_specs_say_why(make: object, message: str) -> None:
    with pytest.raises(SandboxError, match=re.escape(message)):
        make()  # type: ignore[operator]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"cpus": 0}, "cpus"), ({"memory_mb": 8}, "memory_mb"), ({"wall_s": -1}, "wall_s")],
)
def test_bad_limits_say_why(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Limits(**kwargs)  # type: ignore[arg-type]


async def test_missing_workdir_starts_nothing(workspace: Path) -> None:
    before = sorted(ROOT.glob("*/cruscible-sandbox/box-*"))
    spec = BoxSpec(workspace / "nowhere", (ProcessSpec("t", "true"),))
    with pytest.raises(SandboxError, match="is not a directory"):
        await Box.start(spec, workspace / "b0")
    assert sorted(ROOT.glob("*/cruscible-sandbox/box-*")) == before


async def test_proxy_port_cannot_be_forwarded_in_a_build_box(workspace: Path) -> None:
    spec = BoxSpec(workspace / "app", (ProcessSpec("t", "true"),), forwards=(3128,), registry=True)
    with pytest.raises(SandboxError, match="registry proxy"):
        await Box.start(spec, workspace / "b0")
    assert not (workspace / "b0").exists()


async def test_root_path_too_long_for_sockets(workspace: Path) -> None:
    root = workspace / ("x" * 90)
    spec = BoxSpec(workspace / "app", (ProcessSpec("web", "true", port=True),))
    with pytest.raises(SandboxError, match="shorter root"):
        await Box.start(spec, root)
