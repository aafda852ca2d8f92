"""A newcomer's shell: no ``CRUSCIBLE_*`` setting, a home of their own, the CLI as installed."""

from __future__ import annotations

import atexit
import functools
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bot.config import default_data_dir
from provisioning.local import layout, processes, users

CLI = [sys.executable, "-m", "bot"]
# A newcomer's shell has none of these (MAKE*, MFLAGS: what an outer `make test` passes down).
DROPPED = ("CRUSCIBLE_", "XDG_", "DISCORD_", "SLACK_", "MAKE", "MFLAGS")


def private_home(uid: int | None = None, gid: int | None = None) -> Path:
    """A fresh home directory with mode 0700 (as Debian ships /root), owned by ``uid``."""
    home = Path(tempfile.mkdtemp(prefix="cruscible-home-"))
    home.chmod(0o700)
    if uid is not None and gid is not None:
        os.chown(home, uid, gid)
    return home


def shell(changes: Mapping[str, str | None]) -> dict[str, str]:
    """This process's environment without any Cruscible, XDG or chat setting, then ``changes``
    (``None`` removes a variable)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(DROPPED)}
    env["COLUMNS"] = "160"
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def cli_for(user: pwd.struct_passwd) -> list[str] | None:
    """How ``user`` runs this project's CLI: this interpreter; when it lives where ``user``
    cannot enter (pyenv installs under root's private home), a newcomer's own install: the
    system's ``python3`` in a virtualenv with this project installed (``pip install``). ``None``
    when the project or every such interpreter is out of ``user``'s reach."""
    project = Path(__file__).resolve().parents[2]
    if layout.blocking_dir(project / "bot" / "cli.py", user) is not None:
        return None
    if layout.blocking_dir(Path(sys.executable).resolve(), user) is None:
        return CLI
    python = _system_install(project)
    if python is None or layout.blocking_dir(python.resolve(), user) is not None:
        return None
    return [str(python), "-m", "bot"]


@functools.cache
def _system_install(project: Path) -> Path | None:
    """The interpreter of a virtualenv on the system's ``python3`` (in a world-readable
    temporary directory, removed at exit) with ``project`` and its dependencies installed by
    this interpreter's pip (``pip --python``: the virtualenv needs no pip of its own); ``None``
    without a system ``python3`` of this minor version."""
    system = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")
    same = f"import sys; sys.exit(sys.version_info[:2] != {tuple(sys.version_info[:2])})"
    if system is None or subprocess.run([system, "-c", same], check=False).returncode:
        return None
    root = Path(tempfile.mkdtemp(prefix="cruscible-python-"))
    root.chmod(0o755)
    atexit.register(shutil.rmtree, root, True)
    subprocess.run([system, "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin" / "python3"
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet"]
    subprocess.run([*pip, str(project)], check=True, capture_output=True, timeout=600)
    return python


def cruscible(
    *args: str,
    env: Mapping[str, str],
    timeout: float = 180,
    argv: list[str] = CLI,
    **kw: Any,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*argv, *args],
        capture_output=True,
        text=True,
        env=dict(env),
        timeout=timeout,
        check=False,
        **kw,
    )


def servers_of(data_dir: Path, *, root: bool) -> Path:
    """Where the local backend of ``data_dir`` keeps its servers (see provisioning.local.layout):
    ``root`` says the CLI ran as root (servers as the service user)."""
    state = data_dir / "environments"
    return layout.server_dir(state, users.service_user() if root else None)


def up_doctor_down(env: Mapping[str, str], **kw: Any) -> tuple[str, Path]:
    """``env up`` (PostgreSQL and Valkey), ``env doctor``, ``env down``; each must exit 0, and
    nothing of the environment may be left. Returns the environment id and its data dir."""
    up = cruscible("env", "up", "--resources", "postgres,redis", "--json", env=env, **kw)
    assert up.returncode == 0, up.stderr[-3000:]
    made = json.loads(up.stdout)
    env_id = made["id"]
    try:
        assert set(made["bundle"]) >= {"DATABASE_URL", "REDIS_URL"}
        doctor = cruscible("env", "doctor", env_id, env=env, **kw)
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
        assert doctor.stdout.count(" ok ") == 2, doctor.stdout
    finally:
        down = cruscible("env", "down", env_id, env=env, **kw)
    assert down.returncode == 0, down.stderr[-3000:]
    listed = cruscible("env", "list", "--json", env=env, **kw)
    assert listed.returncode == 0, listed.stderr
    assert env_id not in {e["id"] for e in json.loads(listed.stdout)}
    return env_id, Path(env.get("CRUSCIBLE_DATA_DIR") or default_data_dir())


def assert_nothing_left(env_id: str, data_dir: Path, *, root: bool) -> None:
    """No process and no directory of ``env_id`` remains."""
    servers = servers_of(data_dir, root=root)
    assert [m for m in processes.scan(servers) if m.env_id == env_id] == []
    assert not (servers / "envs" / env_id).exists()
