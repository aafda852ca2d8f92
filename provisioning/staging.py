"""Trees staged where an unprivileged user can reach them, shared by the processes of a host.

Replicas, workers and test workers of one installation stage the same trees into the same
folder (server binaries, the sandbox's Python); :func:`exclusive` makes them take turns, and
:func:`link_or_copy` (a ``shutil.copytree`` ``copy_function``) keeps what is already there.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def exclusive(into: Path) -> Iterator[None]:
    """Hold an exclusive ``flock(2)`` on ``into/.lock`` (``into`` must exist); blocks while
    another process stages into ``into``."""
    with open(into / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def link_or_copy(src: str, dst: str) -> None:
    """Hard-link ``src`` at ``dst``, copy it across file systems; keep an existing ``dst``."""
    if os.path.lexists(dst):
        return
    try:
        os.link(src, dst)
    except FileExistsError:
        return
    except OSError:
        shutil.copy2(src, dst)
