"""Choose a provisioning backend by name."""

from __future__ import annotations

from pathlib import Path

from provisioning.backend import Backend, ProvisioningError

BACKENDS = ("local",)


def make_backend(name: str, data_dir: Path) -> Backend:
    """The backend called ``name`` (only ``local`` so far), keeping its state in ``data_dir``."""
    if name == "local":
        from provisioning.local import LocalBackend  # imports the server client libraries

        return LocalBackend(Path(data_dir))
    raise ProvisioningError(f"unknown provisioning backend {name!r} (known: {', '.join(BACKENDS)})")
