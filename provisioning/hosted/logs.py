"""A submission's build and run logs: read without following links the box could plant, masked
before anyone sees them, kept under ``<data_dir>/submissions/<id>/logs/``."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

MASK = "•••"
KEEP_BYTES = 4 * 1024 * 1024  # the last 4 MiB of each log are kept


def mask(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret (longest first) replaced by ``•••``."""
    for value in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(value, MASK)
    return text


def read_tail(path: Path, limit: int = KEEP_BYTES, offset: int | None = None) -> tuple[str, int]:
    """The text of ``path`` from ``offset`` (default: its last ``limit`` bytes) and the offset
    after it; a link or anything but a regular file reads as empty. UTF-8, errors replaced."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return "", offset or 0
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return "", offset or 0
        start = max(0, info.st_size - limit) if offset is None else min(offset, info.st_size)
        os.lseek(fd, start, os.SEEK_SET)
        chunks, size = [], 0
        while size < limit and (data := os.read(fd, min(1 << 20, limit - size))):
            chunks.append(data)
            size += len(data)
        return b"".join(chunks).decode("utf-8", "replace"), start + size
    finally:
        os.close(fd)


def last_lines(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:])


def keep(source: Path, dest: Path, secrets: Iterable[str]) -> Path | None:
    """Copy the (last 4 MiB of the) log ``source`` to ``dest``, masked; ``None`` when absent."""
    text, _ = read_tail(source)
    if not text and not source.is_file():
        return None
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(mask(text, secrets), encoding="utf-8")
    return dest
