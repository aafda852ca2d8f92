"""The ``local`` backend: real server processes on loopback ports, one directory per environment."""

from provisioning.local.backend import LocalBackend

__all__ = ["LocalBackend"]
