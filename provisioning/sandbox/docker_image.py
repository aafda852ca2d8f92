"""The base image of docker boxes: ``FROM scratch`` with only the skeleton of a system.

Nothing is pulled (hosts may have no registry): the image holds empty directories (``/etc``,
``/tmp``, ``/app``, ``/box``, ``/usr`` ...) and the same top-level links as the host (``/bin ->
usr/bin`` on merged-/usr systems); a :class:`DockerBox` mounts the host's ``/usr`` (and its
real top-level library directories), the staged interpreter, a generated ``/etc/passwd`` and
``/etc/group`` read-only over it, like the bubblewrap box. Its tag is a hash of its content,
so building is idempotent: ``cruscible/sandbox:<hash>``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path

import docker

log = logging.getLogger(__name__)

REPO = "cruscible/sandbox"
TOPS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
DIRS = ("etc", "tmp", "proc", "dev", "sys", "app", "box", "usr", "run")
DOCKERFILE = 'FROM scratch\nCOPY rootfs/ /\nLABEL cruscible.sandbox-image="1"\n'


def host_tops() -> dict[str, str | None]:
    """Top-level directories of the host the box needs: name -> link target (``None``: a real
    directory, mounted read-only)."""
    out: dict[str, str | None] = {}
    for top in TOPS:
        path = Path("/") / top
        if path.is_symlink():
            out[top] = os.readlink(path)
        elif path.is_dir():
            out[top] = None
    return out


def _layout() -> tuple[dict[str, str | None], str]:
    tops = host_tops()
    sha = hashlib.sha256(DOCKERFILE.encode())
    for name in DIRS:
        sha.update(f"dir {name}\n".encode())
    for name, target in sorted(tops.items()):
        sha.update(f"top {name} {target}\n".encode())
    return tops, f"{REPO}:{sha.hexdigest()[:16]}"


def ensure(client: docker.DockerClient) -> str:
    """The tag of the base image, built here if the engine lacks it. Blocking (call it in a
    thread); raises ``docker.errors.BuildError``/``APIError`` when the engine refuses."""
    tops, ref = _layout()
    try:
        client.images.get(ref)
        return ref
    except docker.errors.ImageNotFound:
        pass
    log.info("building the sandbox base image %s", ref)
    with tempfile.TemporaryDirectory(prefix="cruscible-sandbox-image-") as tmp:
        context = Path(tmp)
        rootfs = context / "rootfs"
        for name in DIRS:
            (rootfs / name).mkdir(parents=True)
        (rootfs / "tmp").chmod(0o1777)
        for name, target in tops.items():
            if target is None:
                (rootfs / name).mkdir()
            else:
                (rootfs / name).symlink_to(target)
        (context / "Dockerfile").write_text(DOCKERFILE)
        client.images.build(path=str(context), tag=ref, rm=True, forcerm=True, network_mode="none")
    return ref
