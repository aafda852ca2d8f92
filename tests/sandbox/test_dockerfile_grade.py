"""End to end on the docker backend: a reference design submitted with a Dockerfile (FROM a base
image built here, its requirements installed offline in a RUN step) is built by the engine, run
from its image next to a docker environment and graded through the balancer by
``cruscible submit``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from bot.cli import load_catalog
from bot.core.hosted import package_reference
from provisioning.docker.backend import NETWORK_ENV
from provisioning.docker.containers import container_user
from provisioning.docker.images import ENV_PREFIX, build_local
from provisioning.local.users import run_as_for
from provisioning.sandbox import learner_image
from tests.support.learner_base import ensure_base

pytestmark = pytest.mark.slow

DOCKERFILE = """FROM {base}
WORKDIR /srv
COPY . .
RUN ["python3", "-m", "venv", "/venv"]
RUN ["/venv/bin/python", "-m", "pip", "install", "--no-input", "-r", "requirements.txt"]
ENV PATH=/venv/bin:/usr/local/bin:/usr/bin:/bin
"""


@pytest.fixture
def short_root() -> Iterator[Path]:
    """A short, world-searchable directory: data directory and TMPDIR of the run."""
    path = Path(tempfile.mkdtemp(prefix="dg-", dir="/tmp"))
    path.chmod(0o711)
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


def test_a_dockerfile_design_is_built_run_and_graded(docker_engine: str, short_root: Path) -> None:
    data, tmp = short_root / "data", short_root / "t"
    data.mkdir()
    tmp.mkdir(mode=0o711)
    repo = package_reference(load_catalog().get("url-shortener"), "cache_aside", short_root / "r")
    client = docker.from_env()
    try:
        run_as = run_as_for(data)
        refs = build_local(client, container_user(run_as.uid, run_as.gid))
        base = ensure_base(client)
    finally:
        client.close()
    manifest = (repo / "cruscible.toml").read_text()
    (repo / "cruscible.toml").write_text(
        manifest.replace('python = "requirements.txt"', 'dockerfile = "Dockerfile"')
    )
    (repo / "Dockerfile").write_text(DOCKERFILE.format(base=base))
    env = {
        **os.environ,
        "CRUSCIBLE_BACKEND": "docker",
        NETWORK_ENV: "host",  # no bridge on these machines (see DESIGN.md)
        **{ENV_PREFIX + kind.value.upper(): ref for kind, ref in refs.items()},
        "CRUSCIBLE_DATA_DIR": str(data),
        "TMPDIR": str(tmp),
        "COLUMNS": "200",
    }
    res = subprocess.run(
        [sys.executable, "-m", "bot", "submit", "url-shortener", str(repo), "--seed", "7"]
        + ["--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )
    assert res.returncode in (0, 1), res.stdout[-2000:] + res.stderr[-3000:]
    report = json.loads(res.stdout)
    assert "(hosted, http://127.0.0.1:" in report["target"]
    assert "(Dockerfile; processes web×1)" in res.stderr and "(docker caps)" in res.stderr
    contract = [c for c in report["checks"] if c["id"].startswith("contract.")]
    assert contract and all(c["status"] == "pass" for c in contract), contract
    assert not any(c["id"] == "hosted.processes" for c in report["checks"])
    sub_id = report["target"].split()[0]
    meta = json.loads((data / "submissions" / sub_id / "meta.json").read_text())
    assert meta["isolation"]["image"].startswith("sha256:")
    assert meta["isolation"]["net"] == "none (loopback only)"
    build_log = (data / "submissions" / sub_id / "logs" / "build.log").read_text()
    assert "Successfully installed" in build_log and "Successfully built" in build_log
    client = docker.from_env()
    try:  # the submission's work directory is gone: its image goes at the next sweep
        learner_image.sweep(client)
        left = client.images.list(filters={"label": learner_image.LABEL_SUBMISSION})
        mine = meta["work"] + "/"
        assert not [i for i in left if i.labels[learner_image.LABEL_SUBMISSION].startswith(mine)]
    finally:
        client.close()
