"""Boxes for tests: bubblewrap installed from Debian when it is missing and we are root."""

from __future__ import annotations

import os
import shutil
import subprocess

from provisioning.sandbox import Box


def ensure_bubblewrap() -> str | None:
    """Install bubblewrap when missing (root, apt-get); return why boxes cannot run, or None."""
    reason = Box.available()
    if reason and "bubblewrap" in reason and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for argv in (["apt-get", "update"], ["apt-get", "install", "-y", "bubblewrap"]):
            subprocess.run(argv, capture_output=True, env=env, timeout=600, check=False)
        reason = Box.available()
    return reason
