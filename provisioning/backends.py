"""Choose a provisioning backend by name."""

from __future__ import annotations

import os
from pathlib import Path

from provisioning.backend import Backend, ProvisioningError
from provisioning.tls import ENV_PUBLIC_HOST

BACKENDS = ("local", "docker")


def make_backend(name: str, data_dir: Path) -> Backend:
    """The backend called ``name``, keeping its state in ``data_dir``.

    ``local`` reads ``CRUSCIBLE_PUBLIC_HOST`` and its companions (:mod:`provisioning.tls`);
    ``docker`` reads its engine from ``DOCKER_HOST`` and its settings from
    ``CRUSCIBLE_DOCKER_NETWORK`` and ``CRUSCIBLE_DOCKER_IMAGE_<KIND>``, and refuses
    ``CRUSCIBLE_PUBLIC_HOST`` (ProvisioningError): it has no TLS listeners.
    """
    if name == "local":
        from provisioning.local import LocalBackend  # imports the server client libraries
        from provisioning.tls import from_env

        data_dir = Path(data_dir)
        return LocalBackend(data_dir, exposure=from_env(data_dir))
    if name == "docker":
        public = os.environ.get(ENV_PUBLIC_HOST, "").strip()
        if public:  # its containers publish plain text on loopback: refuse rather than mislead
            raise ProvisioningError(
                f"the docker backend cannot expose environments ({ENV_PUBLIC_HOST}={public}): "
                f"use CRUSCIBLE_BACKEND=local for environments reachable from elsewhere, or "
                f"unset {ENV_PUBLIC_HOST}"
            )
        from provisioning.docker import DockerBackend  # imports the docker SDK

        return DockerBackend(Path(data_dir))
    raise ProvisioningError(f"unknown provisioning backend {name!r} (known: {', '.join(BACKENDS)})")
