"""Choose a provisioning backend by name."""

from __future__ import annotations

import os
from pathlib import Path

from provisioning.backend import Backend, ProvisioningError
from provisioning.tls import ENV_PUBLIC_HOST, from_env

BACKENDS = ("local", "docker")


def make_backend(name: str, data_dir: Path) -> Backend:
    """The backend called ``name``, keeping its state in ``data_dir``.

    Both read ``CRUSCIBLE_PUBLIC_HOST`` and its companions (:mod:`provisioning.tls`);
    ``docker`` reads its engine from ``DOCKER_HOST`` and its settings from
    ``CRUSCIBLE_DOCKER_NETWORK`` and ``CRUSCIBLE_DOCKER_IMAGE_<KIND>``, and exposes
    environments only with the host network (ProvisioningError otherwise, before a CA is made:
    :func:`provisioning.docker.backend.check_exposable`).
    """
    data_dir = Path(data_dir)
    if name == "local":
        from provisioning.local import LocalBackend  # imports the server client libraries

        return LocalBackend(data_dir, exposure=from_env(data_dir))
    if name == "docker":
        from provisioning.docker.backend import (  # imports the docker SDK
            DockerBackend,
            check_exposable,
            network_setting,
        )

        if os.environ.get(ENV_PUBLIC_HOST, "").strip():
            check_exposable(network_setting())
        return DockerBackend(data_dir, exposure=from_env(data_dir))
    raise ProvisioningError(f"unknown provisioning backend {name!r} (known: {', '.join(BACKENDS)})")
