"""One hosted submission from files to a running service: where its files live, fetching,
building, running, keeping its logs. Grading it is the caller's (``bot.core.hosted``).

Two places:

- the work directory ``<work_root>/<id>/`` (default ``$TMPDIR/cruscible-hosted``): the sources
  (``src/``, mounted at ``/app``) and the boxes' roots (``b/`` build, ``r/`` run). It must be
  reachable by the unprivileged sandbox user and short enough for socket paths, hence not under
  the data directory (often below a private home). Removed by :meth:`Submission.cleanup`.
- the record ``<data_dir>/submissions/<id>/``: ``meta.json`` and ``logs/`` (masked copies:
  ``build.log``, ``<process>-<replica>.log``), what ``cruscible logs`` shows afterwards.
"""

from __future__ import annotations

import asyncio
import json
import secrets as tokens
import shutil
import tempfile
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from provisioning.environment import Environment
from provisioning.hosted import logs, sources
from provisioning.hosted.build import BUILD_TIMEOUT_S, Built, build
from provisioning.hosted.manifest import Manifest, load_manifest
from provisioning.hosted.service import (
    READY_TIMEOUT_S,
    HostedService,
    bundle_secrets,
    start_service,
)
from provisioning.sandbox import Limits

RECORDS = "submissions"


def default_work_root() -> Path:
    return Path(tempfile.gettempdir()) / "cruscible-hosted"


def _prepare_work_root(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o711)  # the sandbox user may pass through, not list


class Submission:
    """A submission's directories and record. Create with :meth:`create`, or :meth:`open` an
    earlier one by id (for its logs)."""

    def __init__(self, sub_id: str, record: Path, work: Path) -> None:
        self.id = sub_id
        self.record = record
        self.work = work
        self.manifest: Manifest | None = None
        self.root: Path | None = None  # the submission's top folder inside work/src

    @property
    def logs_dir(self) -> Path:
        return self.record / "logs"

    @property
    def build_root(self) -> Path:
        return self.work / "b"

    @property
    def run_root(self) -> Path:
        return self.work / "r"

    @classmethod
    def create(cls, data_dir: Path, *, work_root: Path | None = None, **meta: Any) -> Submission:
        """A new submission with a fresh id (``sub-<12 hex>``); ``meta`` goes to meta.json."""
        work_root = work_root or default_work_root()
        _prepare_work_root(work_root)
        sub_id = "sub-" + tokens.token_hex(6)
        record = data_dir / RECORDS / sub_id
        record.mkdir(parents=True)
        work = work_root / sub_id
        work.mkdir(mode=0o755)
        work.chmod(0o755)
        sub = cls(sub_id, record, work)
        sub.update(
            id=sub_id,
            created_at=datetime.now(UTC).isoformat(),
            status="fetching",
            work=str(work),
            **meta,
        )
        return sub

    @classmethod
    def open(cls, data_dir: Path, sub_id: str) -> Submission:
        """An earlier submission; ``ValueError`` when there is none by that id."""
        if not sub_id.startswith("sub-") or "/" in sub_id or not sub_id.isascii():
            raise ValueError(f"{sub_id!r} is not a submission id (sub-…)")
        record = data_dir / RECORDS / sub_id
        if not (record / "meta.json").is_file():
            raise ValueError(f"no submission {sub_id} in {data_dir / RECORDS}")
        meta = json.loads((record / "meta.json").read_text())
        return cls(sub_id, record, Path(meta.get("work", "")))

    def meta(self) -> dict[str, Any]:
        try:
            return dict(json.loads((self.record / "meta.json").read_text()))
        except (OSError, ValueError):
            return {}

    def update(self, **fields: Any) -> None:
        """Merge ``fields`` into meta.json (written atomically). Never put secrets here."""
        data = {**self.meta(), **fields}
        tmp = self.record / "meta.json.tmp"
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(self.record / "meta.json")

    # -- steps -------------------------------------------------------------------------------
    async def fetch(
        self,
        source: str | Path,
        *,
        check: sources.HostCheck | None = None,
        allow_local_git: bool = False,
    ) -> Manifest:
        """Bring the source (folder, ``.zip``/``.tar.gz``, or git URL) into ``src/`` and read
        its manifest. Raises :class:`sources.SourceError` or ``ManifestError``."""
        text = str(source)
        dest = self.work / "src"
        if sources.is_git_url(text) or (allow_local_git and (Path(text) / ".git").exists()):
            if check is None:
                raise sources.SourceError("git URLs are not accepted here")
            root = await sources.clone_git(
                text, dest, check=check, allow_local_path=allow_local_git
            )
            kind = "git"
        else:
            path = Path(text).expanduser()
            if path.is_dir():
                root = await asyncio.to_thread(sources.copy_folder_sync, path, dest)
                kind = "folder"
            elif path.is_file():
                root = await asyncio.to_thread(sources.unpack_archive_sync, path, dest)
                kind = "archive"
            else:
                raise sources.SourceError(
                    f"{text}: neither a folder, a .zip/.tar.gz archive, nor an https:// git URL"
                )
        await asyncio.to_thread(_open_up, dest)
        self.root = root
        self.manifest = load_manifest(root)
        self.update(
            status="building",
            source_kind=kind,
            processes=[{"name": p.name, "replicas": p.replicas} for p in self.manifest.processes],
        )
        return self.manifest

    async def build(
        self,
        *,
        cache_dir: Path | None = None,
        scope: str = "",
        limits: Limits | None = None,
        timeout_s: float = BUILD_TIMEOUT_S,
    ) -> Built:
        """Build ``src/`` (see :func:`provisioning.hosted.build.build`); the build log is kept
        in ``logs/build.log``."""
        assert self.root is not None and self.manifest is not None, "fetch first"
        cache = cache_dir or self.work.parent / "cache"
        started = time.monotonic()
        try:
            built = await build(
                self.root,
                self.manifest,
                box_root=self.build_root,
                cache_dir=cache,
                scope=scope,
                limits=limits,
                timeout_s=timeout_s,
            )
        finally:
            log = self.build_root / "logs" / "build-0.log"
            if log.exists():
                logs.keep(log, self.logs_dir / "build.log", ())
        self.update(
            status="built",
            build={"cached": built.cached, "seconds": round(time.monotonic() - started, 2)},
        )
        return built

    async def run(
        self,
        env: Environment,
        *,
        limits: Limits,
        ready_timeout_s: float = READY_TIMEOUT_S,
    ) -> HostedService:
        """Start the built submission next to ``env``; ready when ``/healthz`` answers."""
        assert self.root is not None and self.manifest is not None, "fetch first"
        self.update(status="starting", environment=env.id)
        try:
            service = await start_service(
                self.root,
                self.manifest,
                env,
                box_root=self.run_root,
                limits=limits,
                ready_timeout_s=ready_timeout_s,
            )
        except BaseException:
            self.keep_logs(env_secrets(env))
            self.update(status="failed")
            raise
        self.update(status="running", url=service.url, isolation=service.box.isolation)
        return service

    def live_log(self, name: str, replica: int = 0) -> Path:
        """The raw log of a replica while the run box exists (mask before showing)."""
        return self.run_root / "logs" / f"{name}-{replica}.log"

    def kept_log(self, name: str, replica: int = 0) -> Path:
        return self.logs_dir / f"{name}-{replica}.log"

    def keep_logs(self, secrets: Iterable[str]) -> list[Path]:
        """Copy the run logs, masked, into the record."""
        kept = []
        values = tuple(secrets)
        for entry in (self.run_root / "logs").glob("*-*.log"):
            path = logs.keep(entry, self.logs_dir / entry.name, values)
            if path is not None:
                kept.append(path)
        return kept

    async def finish(self, service: HostedService | None, secrets: Iterable[str]) -> None:
        """Stop the service (if any), keep its logs masked, remove the work directory."""
        if service is not None:
            await service.stop()
        self.keep_logs(secrets)
        self.update(status="finished", finished_at=datetime.now(UTC).isoformat())
        await self.cleanup()

    async def cleanup(self) -> None:
        """Remove the work directory (sources, venv, box roots). Idempotent."""
        await asyncio.to_thread(shutil.rmtree, self.work, True)


def env_secrets(env: Environment) -> tuple[str, ...]:
    """What to mask in this environment's submissions' logs."""
    return bundle_secrets(env)


def _open_up(root: Path) -> None:
    """Sources readable by the sandbox user (archives may carry 0600 files)."""
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        mode = path.stat().st_mode
        path.chmod(mode | (0o755 if path.is_dir() else 0o644))
