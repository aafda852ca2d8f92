"""A newcomer's shell: no ``CRUSCIBLE_*`` setting, a home of their own, the CLI as installed."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bot.config import default_data_dir
from provisioning.local import layout, processes, users

CLI = [sys.executable, "-m", "bot"]
DROPPED = ("CRUSCIBLE_", "XDG_", "DISCORD_", "SLACK_")


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
    """How ``user`` runs this project's CLI: this interpreter, unless it (or the project) lives
    where ``user`` cannot enter (pyenv installs under root's private home): then ``None``."""
    project = Path(__file__).resolve().parents[2]
    for path in (Path(sys.executable).resolve(), project / "bot" / "cli.py"):
        if layout.blocking_dir(path, user) is not None:
            return None
    return CLI


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
