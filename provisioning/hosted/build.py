"""Build a submission: a virtualenv at ``/app/.venv`` with its requirements, made inside a build
box (``writable_app``, ``registry``), with a cache so that the same requirements build once.

- ``requirements.txt``: ``pip install -r requirements.txt`` (its own options such as
  ``--no-index`` / ``--find-links wheels`` apply, https://pip.pypa.io/en/stable/reference/requirements-file-format/).
- ``pyproject.toml``: the ``[project] dependencies`` list is installed
  (https://packaging.python.org/en/latest/specifications/pyproject-toml/#dependencies-optional-dependencies);
  the code itself runs from ``/app``.
- nothing to install: an empty virtualenv, so that ``python`` is the same everywhere.
- ``dockerfile``: on the docker backend, the submission's image
  (:mod:`provisioning.hosted.docker_build`; no cache of ours, no venv); refused on the local
  backend, with what to do.

The cache is keyed by the sha256 of the requirements (plus the interpreter and a scope, e.g. the
learner: one learner's build, which runs their code in setup scripts, never feeds another's
run). A hit hard-links the cached venv into the new workdir (``/app`` is read-only to runs, so
the shared files cannot be changed) and no build box starts at all.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from provisioning.hosted.manifest import MANIFEST, Manifest
from provisioning.sandbox import Box, BoxSpec, Limits, ProcessSpec, SandboxError

log = logging.getLogger(__name__)

BUILD_TIMEOUT_S = 300.0
BACKEND_ENV = "CRUSCIBLE_BACKEND"
VENV = ".venv"
GENERATED_REQUIREMENTS = ".cruscible-requirements.txt"
PIP_OPTIONS = "--no-input --progress-bar off --disable-pip-version-check"


class BuildError(RuntimeError):
    """The build failed; ``str()`` names the cause and ends with the build log's last lines."""


@dataclass(frozen=True)
class Built:
    """A finished build: ``cached`` when the venv came from the cache; ``seconds`` of wall time;
    ``log`` the host path of the build log (raw: mask before showing), ``None`` when cached."""

    cached: bool
    seconds: float
    key: str  # the cache key; for a Dockerfile, the image's id
    log: Path | None


def _requirements(workdir: Path, manifest: Manifest) -> tuple[str, bytes]:
    """The requirements file to install (relative to /app) and its bytes ('' when none)."""
    if manifest.build_kind == "none":
        return "", b""
    path = workdir / manifest.build_file
    data = path.read_bytes()
    if path.name == "requirements.txt":
        return manifest.build_file, data
    try:
        project = tomllib.loads(data.decode("utf-8")).get("project", {})
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BuildError(f"{manifest.build_file}: not valid TOML ({exc})") from None
    deps = project.get("dependencies", []) if isinstance(project, dict) else []
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        raise BuildError(f"{manifest.build_file}: project.dependencies must be a list of strings")
    text = "".join(f"{d}\n" for d in deps).encode()
    (workdir / GENERATED_REQUIREMENTS).write_bytes(text)
    return GENERATED_REQUIREMENTS, text


def cache_key(requirements: bytes, scope: str = "") -> str:
    """sha256 of the requirements, the interpreter's version and ``scope``."""
    h = hashlib.sha256()
    for part in (sys.version, sys.base_prefix, scope):
        h.update(part.encode() + b"\0")
    h.update(requirements)
    return h.hexdigest()


# pip runs from the wheel ensurepip bundles (as get-pip does), so that the venv need not get a
# copy of pip first (ensurepip takes several seconds); ensurepip is the fallback.
_FIND_PIP = """bundled=$(python -c 'import ensurepip, os; print(os.path.dirname(ensurepip.__file__))')
set -- "$bundled"/_bundled/pip-*.whl
if [ -f "$1" ]; then pip="/app/{venv}/bin/python $1/pip"
else /app/{venv}/bin/python -m ensurepip -q; pip="/app/{venv}/bin/python -m pip"; fi
"""


def _script(requirements: str) -> str:
    """The build's shell script: a venv at /app/.venv, then pip when there are requirements."""
    script = f"set -e\npython -m venv --without-pip /app/{VENV}\n"
    if not requirements:
        return script
    return (
        script
        + _FIND_PIP.format(venv=VENV)
        + f"echo '$ pip install -r {requirements}'\n"
        + f"$pip install {PIP_OPTIONS} -r {requirements}\n"
    )


def _link_tree(src: Path, dest: Path) -> None:
    """Hard-link ``src`` into ``dest`` (copies when links are impossible), links kept as links."""

    def link(s: str, d: str) -> None:
        try:
            os.link(s, d, follow_symlinks=False)
        except OSError:
            shutil.copy2(s, d, follow_symlinks=False)

    shutil.copytree(src, dest, symlinks=True, copy_function=link)


async def build(
    workdir: Path,
    manifest: Manifest,
    *,
    box_root: Path,
    cache_dir: Path,
    scope: str = "",
    limits: Limits | None = None,
    timeout_s: float = BUILD_TIMEOUT_S,
    backend: str | None = None,
) -> Built:
    """Make ``workdir/.venv`` for ``manifest`` (from the cache when it holds these requirements),
    or, for a Dockerfile, the submission's image (its log at ``box_root/logs/build-0.log``).

    ``box_root`` is a fresh, short, world-searchable directory for the build box. ``backend``
    is where the submission will run (default ``$CRUSCIBLE_BACKEND``, else ``local``). Raises
    :class:`BuildError` (with the last log lines) when the build fails or takes longer than
    ``timeout_s``, or for a Dockerfile on the local backend;
    :class:`provisioning.sandbox.SandboxError` when no box (or engine) can start here.
    """
    started = time.monotonic()
    if manifest.build_kind == "dockerfile":
        backend = backend or os.environ.get(BACKEND_ENV) or "local"
        return await _build_dockerfile(workdir, manifest, backend, box_root, limits, timeout_s)
    requirements, text = _requirements(workdir, manifest)
    key = cache_key(text, scope)
    cached = cache_dir / key / VENV
    if (workdir / VENV).exists() or (workdir / VENV).is_symlink():
        await asyncio.to_thread(_remove, workdir / VENV)
    if cached.is_dir() and (cache_dir / key / ".complete").exists():
        await asyncio.to_thread(_link_tree, cached, workdir / VENV)
        return Built(True, time.monotonic() - started, key, None)
    base = limits or Limits()
    spec = BoxSpec(
        workdir=workdir,
        processes=(ProcessSpec("build", _script(requirements)),),
        limits=Limits(
            cpus=base.cpus,
            memory_mb=max(base.memory_mb, 1024),
            pids=base.pids,
            disk_mb=max(base.disk_mb, 1024),
            open_files=base.open_files,
            wall_s=timeout_s,
        ),
        writable_app=True,
        registry=bool(requirements),
    )
    box = await Box.start(spec, box_root)
    try:
        states = await box.wait(timeout_s + 10)
        tail = box.log_tail("build", 0, lines=30)
        refused = box.refused_hosts
    finally:
        await box.stop()
    state = states[0]
    if state.running or state.exit_code != 0:
        why = state.reason if not state.running else f"killed: wall time {timeout_s:g} s"
        note = (
            f"\n(the registry proxy refused: {', '.join(sorted(set(refused)))})" if refused else ""
        )
        raise BuildError(f"the build failed ({why}); its last lines:\n{tail}{note}")
    await asyncio.to_thread(_store, workdir / VENV, cache_dir / key)
    return Built(False, time.monotonic() - started, key, box.log_path("build", 0))


async def _build_dockerfile(
    workdir: Path,
    manifest: Manifest,
    backend: str,
    box_root: Path,
    limits: Limits | None,
    timeout_s: float,
) -> Built:
    """The image of a Dockerfile submission (docker backend only)."""
    if backend != "docker":
        raise BuildError(
            f"{MANIFEST}: build.dockerfile: a Dockerfile is built only where submissions run on "
            f"the docker backend, and this host runs them on {backend!r} (bubblewrap): the "
            f"operator can set {BACKEND_ENV}=docker; or build with "
            '[build] python = "requirements.txt"'
        )
    from provisioning.hosted.docker_build import DockerBuildError, build_image  # the docker SDK

    started = time.monotonic()
    box_root.mkdir(parents=True, exist_ok=True)
    log_path = box_root / "logs" / "build-0.log"
    try:
        image = await build_image(
            workdir, manifest, log_path=log_path, limits=limits, timeout_s=timeout_s
        )
    except DockerBuildError as exc:
        raise BuildError(str(exc)) from None
    return Built(False, time.monotonic() - started, image.ref, log_path)


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    else:
        shutil.rmtree(path)


def _store(venv: Path, entry: Path) -> None:
    """Keep a copy of a fresh venv as the cache entry ``entry`` (atomically complete)."""
    if (entry / ".complete").exists():
        return
    entry.parent.mkdir(parents=True, exist_ok=True)
    entry.parent.chmod(0o700)
    tmp = entry.with_name(entry.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        _link_tree(venv, tmp / VENV)
        (tmp / ".complete").write_text("")
        os.rename(tmp, entry)
    except OSError as exc:  # another build stored it first, or the disk is full: not fatal
        log.info("build cache not stored: %s", exc)
        shutil.rmtree(tmp, ignore_errors=True)


__all__ = ["BUILD_TIMEOUT_S", "BuildError", "Built", "SandboxError", "build", "cache_key"]
