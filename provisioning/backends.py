"""Choose a provisioning backend by name."""

from __future__ import annotations

from pathlib import Path

from provisioning.backend import Backend, ProvisioningError

BACKENDS = ("local", "docker")


def make_backend(name: str, data_dir: Path) -> Backend:
    """The backend called ``name``, keeping its state in ``data_dir``.

    ``local`` reads ``CRUSCIBLE_PUBLIC_HOST`` and its companions (:mod:`provisioning.tls`);
    ``docker`` reads its engine from ``DOCKER_HOST`` and its settings from
    ``CRUSCIBLE_DOCKER_NETWORK`` and ``CRUSCIBLE_DOCKER_IMAGE_<KIND>``.
    """
    if name == "local":
        from provisioning.local import LocalBackend  # imports the server client libraries
        from provisioning.tls import from_env

        data_dir = Path(data_dir)
        return LocalBackend(data_dir, exposure=from_env(data_dir))
    if name == "docker":
        from provisioning.docker import DockerBackend  # imports the docker SDK

        return DockerBackend(Path(data_dir))
    raise ProvisioningError(f"unknown provisioning backend {name!r} (known: {', '.join(BACKENDS)})")
