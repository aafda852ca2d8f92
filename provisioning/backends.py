"""Choose a provisioning backend by name."""

from __future__ import annotations

from pathlib import Path

from provisioning.backend import Backend, ProvisioningError

BACKENDS = ("local", "docker")


def make_backend(name: str, data_dir: Path) -> Backend:
    """The backend called ``name``, keeping its state in ``data_dir``.

    ``docker`` reads its engine from ``DOCKER_HOST`` and its settings from
    ``CRUSCIBLE_DOCKER_NETWORK`` and ``CRUSCIBLE_DOCKER_IMAGE_<KIND>``.
    """
    if name == "local":
        from provisioning.local import LocalBackend  # imports the server client libraries

        return LocalBackend(Path(data_dir))
    if name == "docker":
        from provisioning.docker import DockerBackend  # imports the docker SDK

        return DockerBackend(Path(data_dir))
    raise ProvisioningError(f"unknown provisioning backend {name!r} (known: {', '.join(BACKENDS)})")
