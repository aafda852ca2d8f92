"""``cruscible.toml``: what a hosted submission builds and which processes it runs.

The manifest is a public contract (README, "The manifest")::

    [build]
    python = "requirements.txt"        # or "pyproject.toml"; or: dockerfile = "Dockerfile"

    [processes.web]                     # gets $PORT; replicas sit behind the balancer
    command = "python main.py"
    replicas = 2

    [processes.worker]                  # any number of named non-web processes
    command = "python worker.py"

With ``dockerfile``, a process may leave ``command`` out: it runs the image's ``ENTRYPOINT`` and
``CMD`` (:data:`IMAGE_COMMAND`, expanded inside the box).

Without a manifest, a submission with ``main.py`` runs ``python main.py`` as ``web``, built
from ``requirements.txt`` or ``pyproject.toml`` when one is present.

Errors are :class:`ManifestError` with one line per problem, ``cruscible.toml: field: reason``.
Parsing is :mod:`tomllib` (TOML 1.0, https://toml.io/en/v1.0.0) then pydantic.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

MANIFEST = "cruscible.toml"
WEB = "web"
MAX_REPLICAS = 4
MAX_PROCESSES = 8
DEFAULT_ENTRY = "main.py"
PYTHON_FILES = ("requirements.txt", "pyproject.toml")
IMAGE_COMMAND = 'eval "exec $CRUSCIBLE_IMAGE_COMMAND"'
"""The command of a process that names none in a dockerfile build: the image's ENTRYPOINT and
CMD, which the docker box puts shell-quoted in ``$CRUSCIBLE_IMAGE_COMMAND``."""

ProcessName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{0,31}$")]


class ManifestError(ValueError):
    """The manifest (or the submission's layout) cannot be used; ``str()`` says why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BuildSection(_Strict):
    python: str | None = Field(default=None, min_length=1, max_length=200)
    dockerfile: str | None = Field(default=None, min_length=1, max_length=200)


class ProcessSection(_Strict):
    command: str | None = Field(default=None, min_length=1, max_length=2000)
    replicas: int = Field(default=1, ge=1, le=MAX_REPLICAS)


class _Document(_Strict):
    build: BuildSection = BuildSection()
    processes: dict[ProcessName, ProcessSection] = Field(min_length=1, max_length=MAX_PROCESSES)


@dataclass(frozen=True)
class Process:
    """One named process: ``web`` gets ``$PORT`` and sits behind the balancer."""

    name: str
    command: str
    replicas: int = 1

    @property
    def web(self) -> bool:
        return self.name == WEB


@dataclass(frozen=True)
class Manifest:
    """What to build and run. ``build`` is ``("python", file)``, ``("dockerfile", file)`` or
    ``("none", "")``; ``processes`` lists ``web`` first."""

    build_kind: Literal["python", "dockerfile", "none"]
    build_file: str
    processes: tuple[Process, ...]
    from_file: bool  # False: the defaults for a repository with main.py

    @property
    def web(self) -> Process:
        return next(p for p in self.processes if p.web)


def _where(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc if str(part) != "[key]")


def _reason(error: dict) -> str:  # type: ignore[type-arg]
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required"
    if kind in {"greater_than_equal", "less_than_equal"}:
        return f"must be between 1 and {MAX_REPLICAS}"
    if kind == "string_pattern_mismatch":
        return "a name is a lower-case letter then lower-case letters, digits or '-' (≤ 32)"
    return str(error["msg"])


def _relative_file(source: Path, field: str, name: str) -> str:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts:
        raise ManifestError(f"{MANIFEST}: {field}: {name!r} must be a path inside the submission")
    if not (source / path).is_file():
        raise ManifestError(f"{MANIFEST}: {field}: {name} is not a file in the submission")
    return str(path)


def _python_build_file(source: Path) -> tuple[Literal["python", "none"], str]:
    for name in PYTHON_FILES:
        if (source / name).is_file():
            return "python", name
    return "none", ""


def parse_manifest(text: str, source: Path) -> Manifest:
    """Validate the text of ``cruscible.toml`` against the files under ``source``.

    Raises :class:`ManifestError` (``cruscible.toml: field: reason``, one line per problem).
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(f"{MANIFEST}: not valid TOML: {exc}") from None
    raw.setdefault("processes", {})
    try:
        doc = _Document.model_validate(raw)
    except ValidationError as exc:
        lines = [
            f"{MANIFEST}: {_where(e['loc']) or '(top level)'}: {_reason(e)}"  # type: ignore[arg-type]
            for e in exc.errors()
        ]
        raise ManifestError("\n".join(lines)) from None
    if WEB not in doc.processes:
        raise ManifestError(
            f"{MANIFEST}: processes.web: required (exactly one web process, [processes.web], "
            "serves HTTP on $PORT)"
        )
    build = doc.build
    kind: Literal["python", "dockerfile", "none"]
    if build.python and build.dockerfile:
        raise ManifestError(f"{MANIFEST}: build: choose python or dockerfile, not both")
    if build.python:
        kind, file = "python", _relative_file(source, "build.python", build.python)
        if PurePosixPath(file).name not in PYTHON_FILES:
            raise ManifestError(
                f"{MANIFEST}: build.python: {file} is neither requirements.txt nor pyproject.toml"
            )
    elif build.dockerfile:
        kind, file = "dockerfile", _relative_file(source, "build.dockerfile", build.dockerfile)
    else:
        kind, file = _python_build_file(source)
    names = sorted(doc.processes, key=lambda n: (n != WEB, n))
    missing = [n for n in names if doc.processes[n].command is None]
    if missing and kind != "dockerfile":
        raise ManifestError(
            "\n".join(
                f"{MANIFEST}: processes.{n}.command: required (only a dockerfile build may leave "
                "it out, to run the image's CMD)"
                for n in missing
            )
        )
    processes = tuple(
        Process(n, doc.processes[n].command or IMAGE_COMMAND, doc.processes[n].replicas)
        for n in names
    )
    return Manifest(kind, file, processes, from_file=True)


def load_manifest(source: Path) -> Manifest:
    """The manifest of the submission unpacked at ``source``, or the defaults for ``main.py``.

    Raises :class:`ManifestError` when the manifest is malformed, or when there is neither a
    manifest nor a ``main.py``.
    """
    path = source / MANIFEST
    if path.is_file():
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ManifestError(f"{MANIFEST}: cannot be read as UTF-8 ({exc})") from None
        return parse_manifest(text, source)
    if not (source / DEFAULT_ENTRY).is_file():
        raise ManifestError(
            f"nothing to run: expected a {MANIFEST} at the top of the submission, or a "
            f"{DEFAULT_ENTRY} there (run as `python {DEFAULT_ENTRY}`, serving HTTP on $PORT)"
        )
    kind, file = _python_build_file(source)
    return Manifest(kind, file, (Process(WEB, f"python {DEFAULT_ENTRY}"),), from_file=False)
