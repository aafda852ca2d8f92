"""Where the local backend keeps what its server processes must reach.

The backend's state directory (``<CRUSCIBLE_DATA_DIR>/environments`` for the bot and the CLI)
holds::

    envs/<env id>/<resource>/   one directory per server: its data, config, socket and log
                                (owned by the user the servers run as, mode 0700)
    templates/                  the PostgreSQL template cluster, made once by initdb
    ports/                      loopback port leases (read and written by us only)

Without root, servers run as the current user and this directory is used as it is.

As root, servers run as the unprivileged system user ``cruscible`` (PostgreSQL refuses to
run as root), which must *traverse* every ancestor of ``envs/`` and ``templates/``: Unix
path resolution needs search (x) permission on each directory of a path
(https://man7.org/linux/man-pages/man7/path_resolution.7.html). When the state directory
sits under a directory that user cannot search — Debian ships ``/root`` with mode 0700
(https://www.debian.org/doc/debian-policy/ch-opersys.html#users-and-groups) — the
server side moves to a runtime directory instead::

    /var/lib/cruscible-runtime/         root-owned, mode 0711 (traversable, not listable)
        <digest of the state dir>/      root-owned, mode 0711: envs/, templates/, ports/
            origin                      the state directory it serves (mode 0600)

``/var/lib`` is the FHS place for state data
(https://refspecs.linuxfoundation.org/FHS_3.0/fhs/ch05s08.html). The store, the reports
and everything else stay in the data directory, which is private (mode 0700 when Cruscible
creates it; root's default, ``/var/lib/cruscible``, included): a directory the service user
can traverse lets any local user open the files whose names they know, so only the servers'
side is traversable. No permission of the user's own directories is ever changed. The runtime directory outlives its environments (the
template is a cache worth keeping); deleting it while no environment runs is safe.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pwd
from pathlib import Path

from provisioning.backend import ProvisioningError

log = logging.getLogger(__name__)
RUNTIME_BASE = Path("/var/lib/cruscible-runtime")
TRAVERSABLE = 0o711


def blocking_dir(path: Path, user: pwd.struct_passwd) -> Path | None:
    """The first ancestor of ``path`` (``path`` excluded) that ``user`` cannot search.

    ``path`` must be absolute; ancestors that do not exist yet are not blocking (they are
    created by us with :func:`make_traversable`).
    """
    for parent in reversed(path.parents):
        try:
            st = parent.stat()
        except FileNotFoundError:
            return None
        if st.st_mode & 0o001 or (st.st_uid == user.pw_uid and st.st_mode & 0o100):
            continue
        if st.st_mode & 0o010 and (
            st.st_gid == user.pw_gid or user.pw_name in _group_members(st.st_gid)
        ):
            continue
        return parent
    return None


def _group_members(gid: int) -> list[str]:
    import grp

    try:
        return list(grp.getgrgid(gid).gr_mem)
    except KeyError:
        return []


def make_traversable(path: Path) -> Path:
    """Create ``path`` (and missing parents) and give it mode 0711 whatever the umask."""
    path.mkdir(mode=TRAVERSABLE, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o777 != TRAVERSABLE:
        path.chmod(TRAVERSABLE)
    return path


def runtime_path(state_dir: Path, base: Path = RUNTIME_BASE) -> Path:
    """The path of the runtime directory serving ``state_dir`` (nothing is created)."""
    return base / hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:12]


def runtime_dir(state_dir: Path, base: Path = RUNTIME_BASE) -> Path:
    """The root-owned runtime directory serving ``state_dir`` (see the module's docstring)."""
    state_dir = state_dir.resolve()
    owner = make_traversable(base).stat().st_uid
    if owner != os.geteuid():
        raise ProvisioningError(f"{base} exists but belongs to uid {owner}, not to us")
    target = make_traversable(runtime_path(state_dir, base))
    origin = target / "origin"
    if not origin.exists():
        fd = os.open(origin, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"{state_dir}\n")
    return target


def server_dir(state_dir: Path, user: pwd.struct_passwd | None, base: Path = RUNTIME_BASE) -> Path:
    """Where servers of ``state_dir`` live: ``state_dir`` itself when ``user`` (the service user,
    or ``None`` when servers run as ourselves) can reach it, else :func:`runtime_dir`."""
    state_dir = state_dir.resolve()
    if user is None or blocking_dir(state_dir / "envs", user) is None:
        return state_dir
    target = runtime_dir(state_dir, base)
    log.info(
        "%s is out of reach of user %s, which runs the servers: their directories are in %s",
        state_dir,
        user.pw_name,
        target,
    )
    blocked = blocking_dir(target / "envs", user)
    if blocked is not None:
        raise ProvisioningError(
            f"{blocked} is not searchable by user {user.pw_name!r}, which runs the servers "
            f"because we are root; set CRUSCIBLE_DATA_DIR to a directory it can reach"
        )
    return target
