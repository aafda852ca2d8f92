"""An installed Cruscible (``pip install .``, as compose.yaml's image does) carries every file
the code reads: the package data patterns of pyproject.toml cover each non-Python file of the
packages, e.g. a challenge's ``baselines.json`` (the reference designs its discussion and
*Show trade-offs* compare with)."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("bot", "provisioning", "grading", "challenges")


def test_package_data_covers_every_data_file_of_the_packages() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = setuptools["package-data"]["*"]
    data = [
        path.relative_to(ROOT)
        for package in PACKAGES
        for path in (ROOT / package).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix not in {".py", ".pyc"}
    ]
    assert any(p.name == "baselines.json" for p in data)  # the files this test is about
    left_out = [str(p) for p in data if not any(fnmatch.fnmatch(p.name, pat) for pat in patterns)]
    assert not left_out, f"not installed by `pip install .`: {left_out}"
