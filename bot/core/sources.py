"""What a learner submitted: a running service's URL, or code (a public git URL, an archive
attached in chat, a folder from the terminal), and where an attached archive waits until it is
graded.

The rule telling code from a service (README "Submitting code"), kept simple on purpose:

- ``https://…/….git``, ``https://github.com/<owner>/<repo>``, ``https://gitlab.com/<group>/…/<repo>``
  and ``https://codeberg.org/<owner>/<repo>`` are code (a public git repository);
- any other ``http(s)://`` URL is a running service;
- with ``local_paths`` (the terminal only) an existing folder or ``.zip``/``.tar.gz`` is code.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from bot.core.errors import CoachError

ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz")
MAX_ARCHIVE_BYTES = 25 * 2**20  # Discord's default attachment cap, and plenty for code
FORGES = {"github.com": 2, "codeberg.org": 2, "gitlab.com": 2}  # host → path segments at least


@dataclass(frozen=True)
class Source:
    """``kind`` ``url`` (``value`` is the service URL) or ``code`` (a git URL or a local path)."""

    kind: str
    value: str


def is_git_url(url: str) -> bool:
    """True when ``url`` names a public git repository by the rule of this module."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        return False
    path = parts.path.rstrip("/")
    if path.endswith(".git"):
        return True
    segments = [p for p in path.split("/") if p]
    needed = FORGES.get(parts.hostname.lower())
    return needed is not None and len(segments) >= needed


def classify(text: str, *, local_paths: bool = False) -> Source:
    """Tell a service URL from code; raises :class:`CoachError` for anything else."""
    text = text.strip().strip("<>")
    lowered = text.lower()
    if lowered.startswith(("http://", "https://")):
        if is_git_url(text):
            return Source("code", text)
        return Source("url", text)
    if lowered.startswith(("git@", "ssh://", "git://")):
        raise CoachError(f"{text!r}: only public https:// git URLs can be fetched")
    if local_paths and "://" not in text:
        path = Path(text).expanduser()
        if path.is_dir() or (path.is_file() and archive_suffix(path.name)):
            return Source("code", str(path.resolve()))
        if path.exists():
            raise CoachError(f"{text!r} is neither a folder nor a .zip/.tar.gz archive")
        raise CoachError(f"{text!r}: no such folder or archive, and not an http(s) URL")
    raise CoachError(
        f"{text!r} is not an http(s) URL: submit your service's URL, a public https:// git "
        "URL, or attach a .zip/.tar.gz of your code"
    )


def archive_suffix(filename: str) -> str | None:
    """The archive suffix of ``filename`` (``.zip``, ``.tar.gz``, ``.tgz``), or None."""
    lowered = filename.lower()
    return next((s for s in ARCHIVE_SUFFIXES if lowered.endswith(s)), None)


def check_upload(filename: str, size: int | None, *, cap: int = MAX_ARCHIVE_BYTES) -> str:
    """The archive suffix of an attached file, or :class:`CoachError` saying why it is refused
    (not a ``.zip``/``.tar.gz``, or over ``cap`` bytes). ``size`` as the platform declares it."""
    suffix = archive_suffix(filename)
    if suffix is None:
        raise CoachError(
            f"{filename!r} is not code I can build: attach a .zip or .tar.gz of your repository"
        )
    if size is not None and size > cap:
        raise CoachError(f"{filename!r} is {size / 2**20:.1f} MB; the limit is {cap // 2**20} MB")
    return suffix


def uploads_dir(data_dir: Path) -> Path:
    """Where attached archives wait until graded (private to the bot's user)."""
    path = data_dir / "uploads"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


class UploadTooLarge(CoachError):
    """The download went over the cap (the platform's declared size was wrong or missing)."""


class Upload:
    """One archive being written under the data dir, refusing more than ``cap`` bytes: ``write``
    each chunk, then ``path``; ``discard`` removes a partial or refused file."""

    def __init__(self, data_dir: Path, filename: str, *, cap: int = MAX_ARCHIVE_BYTES) -> None:
        suffix = check_upload(filename, None, cap=cap)
        self.filename = filename
        self.cap = cap
        self.path = uploads_dir(data_dir) / f"{uuid.uuid4().hex}{suffix}"
        self.size = 0
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.cap:
            self.discard()
            raise UploadTooLarge(
                f"{self.filename!r} is over {self.cap // 2**20} MB; the limit is "
                f"{self.cap // 2**20} MB"
            )
        os.write(self._fd, chunk)

    def close(self) -> Path:
        os.close(self._fd)
        self._fd = -1
        return self.path

    def discard(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self.path.unlink(missing_ok=True)


def is_upload(data_dir: Path, source: str) -> bool:
    """True when ``source`` is an archive this bot stored (removed once graded)."""
    try:
        return Path(source).resolve().parent == (data_dir / "uploads").resolve()
    except OSError:
        return False
