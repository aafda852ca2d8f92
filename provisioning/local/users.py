"""The unprivileged account servers run as when we are root (PostgreSQL refuses root)."""

from __future__ import annotations

import logging
import os
import pwd
import subprocess
from dataclasses import dataclass
from pathlib import Path

from provisioning.backend import ProvisioningError
from provisioning.local import binaries

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


def blocking_dir(path: Path, user: pwd.struct_passwd) -> Path | None:
    """The first ancestor of ``path`` that ``user`` cannot search, if any."""
    for parent in [*reversed(path.parents)]:
        st = parent.stat()
        if st.st_mode & 0o001 or st.st_uid == user.pw_uid:
            continue
        if st.st_mode & 0o010 and st.st_gid == user.pw_gid:
            continue
        return parent
    return None


def _check_reachable(path: Path, user: pwd.struct_passwd) -> None:
    """Every ancestor of ``path`` must be searchable by ``user``."""
    parent = blocking_dir(path, user)
    if parent is not None:
        raise ProvisioningError(
            f"{parent} is not searchable by user {user.pw_name!r}, which runs the servers "
            f"because we are root; choose a data directory under world-searchable parents "
            f"or run: chmod o+x {parent}"
        )


def run_as_for(data_dir: Path) -> RunAs:
    """When root, ensure the service user exists and can reach ``data_dir``."""
    if os.geteuid() != 0:
        return RunAs()
    user = _ensure_user(SERVICE_USER)
    _check_reachable(data_dir, user)
    binaries.stage_for(lambda path: blocking_dir(path, user) is None)
    return RunAs(user.pw_uid, user.pw_gid)
