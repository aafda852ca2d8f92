"""Started by an ordinary user (no root, so no cgroups): the box still runs in its namespaces,
as that user, under per-process rlimits, and ``isolation`` says so."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

import provisioning

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="switching to another user needs root")

NOBODY = 65534
SYSTEM_PYTHON = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"

# Imports only the sandbox package (standard library only), copied from this checkout, as the
# ordinary user running a system Python without the project's virtualenv.
DRIVER = r"""
import asyncio, json, sys, types
from pathlib import Path
package = types.ModuleType("provisioning")
package.__path__ = [sys.argv[1]]
sys.modules["provisioning"] = package
from provisioning.sandbox import Box, BoxSpec, Limits, ProcessSpec

async def main():
    work = Path(sys.argv[2])
    command = (
        "grep -E 'Max (address space|processes|open files|file size)' /proc/self/limits; "
        "echo uid $(id -u); grep -E 'NoNewPrivs' /proc/self/status; "
        "python3 -c 'bytearray(400 * 1024 * 1024)' 2>&1 | tail -n 1"
    )
    spec = BoxSpec(
        workdir=work / "app",
        processes=(ProcessSpec("t", command),),
        limits=Limits(memory_mb=128, pids=64, open_files=256, disk_mb=32, wall_s=30),
    )
    box = await Box.start(spec, work / "box")
    try:
        state = (await box.wait(40))[0]
        print(json.dumps({"isolation": box.isolation, "reason": state.reason,
                          "log": box.log_tail("t")}))
    finally:
        await box.stop()

asyncio.run(main())
"""


async def test_ordinary_user_gets_rlimits_and_says_so(workspace: Path) -> None:
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.skip(f"no {SYSTEM_PYTHON} for the ordinary user")
    os.chown(workspace, NOBODY, NOBODY)
    os.chown(workspace / "app", NOBODY, NOBODY)
    # a copy of the sandbox package: the checkout may live where that user cannot enter
    source, package = workspace / "provisioning", Path(provisioning.__file__).parent
    shutil.copytree(
        package / "sandbox", source / "sandbox", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy2(package / "staging.py", source)
    proc = await asyncio.create_subprocess_exec(
        shutil.which("setpriv") or "setpriv",
        f"--reuid={NOBODY}",
        f"--regid={NOBODY}",
        "--clear-groups",
        "--",
        SYSTEM_PYTHON,
        "-I",
        "-c",
        DRIVER,
        str(source),
        str(workspace),
        cwd=workspace,
        env={"PATH": "/usr/bin:/bin", "HOME": str(workspace), "LANG": "C.UTF-8"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode == 0, err.decode()
    result = json.loads(out.decode().strip().splitlines()[-1])
    isolation, log = result["isolation"], result["log"]
    assert isolation["cgroup"] == "none (rlimits only)"
    assert isolation["user"] == "nobody"
    assert "(per-process rlimits)" in isolation["limits"]
    assert result["reason"] == "exited 0", log
    assert f"uid {NOBODY}" in log
    assert "NoNewPrivs:\t1" in log
    assert f"Max address space         {128 * 1024 * 1024}" in log
    assert "Max processes             64" in log
    assert "Max open files            256" in log
    assert "MemoryError" in log  # 400 MB does not fit in 128 MB
