"""The unprivileged account servers run as when we are root (PostgreSQL refuses root)."""

from __future__ import annotations

import logging
import os
import pwd
import subprocess
from dataclasses import dataclass
from pathlib import Path

from provisioning.backend import ProvisioningError
from provisioning.local import binaries, layout
from provisioning.local.layout import blocking_dir

log = logging.getLogger(__name__)

SERVICE_USER = "cruscible"


@dataclass(frozen=True)
class RunAs:
    """Who server processes run as: ``None`` ids mean the current user."""

    uid: int | None = None
    gid: int | None = None

    def own(self, *paths: Path) -> None:
        """Give ``paths`` (recursively) to the service user; a no-op when not root."""
        if self.uid is None or self.gid is None:
            return
        for path in paths:
            os.chown(path, self.uid, self.gid, follow_symlinks=False)
            if path.is_dir() and not path.is_symlink():
                for root, dirs, files in os.walk(path):
                    for name in dirs + files:
                        os.chown(
                            os.path.join(root, name), self.uid, self.gid, follow_symlinks=False
                        )


def _ensure_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    log.info("creating system user %s to run servers", name)
    done = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        capture_output=True,
        text=True,
    )
    try:
        return pwd.getpwnam(name)  # also covers a concurrent useradd (exit 9)
    except KeyError:
        raise ProvisioningError(
            f"cannot create system user {name!r}: {done.stderr.strip()}"
        ) from None


def service_user() -> pwd.struct_passwd | None:
    """The account servers run as: ``None`` (ourselves) unless we are root, then
    :data:`SERVICE_USER`, created as a system user on first use."""
    return _ensure_user(SERVICE_USER) if os.geteuid() == 0 else None


def _check_reachable(path: Path, user: pwd.struct_passwd) -> None:
    """Every ancestor of ``path`` must be searchable by ``user``."""
    parent = blocking_dir(path, user)
    if parent is not None:
        raise ProvisioningError(
            f"{parent} is not searchable by user {user.pw_name!r}, which runs the servers "
            f"because we are root; set CRUSCIBLE_DATA_DIR to a directory it can reach"
        )


def _staging_into(user: pwd.struct_passwd) -> Path:
    """The per-interpreter staging folder, under the temporary directory when ``user`` can reach
    it (a private ``TMPDIR`` cannot be used), else under the root-owned runtime base."""
    into = binaries.staging_dir()
    if blocking_dir(into, user) is None:
        return into
    return layout.make_traversable(layout.RUNTIME_BASE) / into.name


def run_as_for(envs_dir: Path) -> RunAs:
    """When root, ensure the service user exists, can reach ``envs_dir`` (see
    :func:`provisioning.local.layout.server_dir` to pick one it can) and can run every server
    binary (staged where it can reach them when the project lives in a private directory)."""
    user = service_user()
    if user is None:
        return RunAs()
    _check_reachable(envs_dir, user)
    binaries.stage_for(lambda path: blocking_dir(path, user) is None, _staging_into(user))
    return RunAs(user.pw_uid, user.pw_gid)
