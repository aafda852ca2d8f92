"""Offline wheels: the distributions installed here, re-packed as wheels for a submission's
``wheels/`` folder, so that a build needs no registry (the demo, tests and benchmarks run
without the internet).

A wheel is a zip of the installed files plus the ``.dist-info`` directory (PEP 427,
https://packaging.python.org/en/latest/specifications/binary-distribution-format/); an
installed distribution keeps exactly that (its ``RECORD`` lists the files and its ``WHEEL``
file the tags), so re-packing it gives back an installable wheel of the very version that
runs here. Files installed outside ``site-packages`` (console scripts) are left out.
"""

from __future__ import annotations

import re
import zipfile
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def _tag(dist: metadata.Distribution) -> str:
    text = dist.read_text("WHEEL") or ""
    tags = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Tag:")]
    if not tags:
        raise ValueError(f"{dist.metadata['Name']} was not installed from a wheel")
    if len(tags) == 1:
        return tags[0]
    pys, abis, plats = (sorted({t.split("-")[i] for t in tags}) for i in range(3))
    return f"{'.'.join(pys)}-{'.'.join(abis)}-{'.'.join(plats)}"


def closure(names: list[str]) -> list[metadata.Distribution]:
    """The installed distributions ``names`` name (``"psycopg[binary]"`` allowed) and
    everything they require here, each once. Raises ``PackageNotFoundError``."""
    env = default_environment()
    seen: dict[str, metadata.Distribution] = {}
    todo = [Requirement(n) for n in names]
    while todo:
        req = todo.pop()
        key = canonicalize_name(req.name)
        dist = seen.get(key) or metadata.distribution(req.name)
        if key not in seen:
            seen[key] = dist
        for text in dist.requires or []:
            sub = Requirement(text)
            wanted = [""] + sorted(req.extras)
            if sub.marker is None or any(sub.marker.evaluate({**env, "extra": e}) for e in wanted):
                sub_key = canonicalize_name(sub.name)
                if sub_key not in seen or sub.extras:
                    todo.append(sub)
    return list(seen.values())


def repack(dist: metadata.Distribution, dest: Path) -> Path:
    """Write ``dist`` as a wheel into ``dest``; returns its path."""
    name = re.sub(r"[-_.]+", "_", dist.metadata["Name"])
    wheel = dest / f"{name}-{dist.version}-{_tag(dist)}.whl"
    if wheel.exists():
        return wheel
    root = Path(str(dist.locate_file("")))
    tmp = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for file in dist.files or []:
            rel = str(file)
            if rel.startswith("..") or rel.endswith(".pyc") or "__pycache__" in rel:
                continue
            path = root / rel
            if path.is_file():
                zf.write(path, rel)
    tmp.rename(wheel)
    return wheel


def vendor(names: list[str], dest: Path) -> list[Path]:
    """Re-pack ``names`` and their installed requirements as wheels in ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    return [repack(d, dest) for d in closure(names)]
