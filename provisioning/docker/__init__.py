"""The ``docker`` backend: the same specs as labelled containers through the docker SDK."""

from provisioning.docker.backend import DockerBackend

__all__ = ["DockerBackend"]
