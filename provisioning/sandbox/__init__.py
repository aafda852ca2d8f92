"""The local sandbox for learner code: bubblewrap, a private network namespace with only
loopback, cgroups (v1 or v2) and rlimits, socket-file relays, and the registry egress proxy;
or, next to environments of the docker backend, a docker container with no network
(:class:`provisioning.sandbox.docker_box.DockerBox`, same API)."""

from provisioning.sandbox.box import Box
from provisioning.sandbox.limits import Limits
from provisioning.sandbox.spec import (
    BoxSpec,
    ProcessFault,
    ProcessSpec,
    ProcessState,
    SandboxError,
)


def box_class(backend: str) -> type[Box]:
    """The box for submissions next to environments of provisioning ``backend``
    (``Environment.backend``): ``DockerBox`` for ``"docker"``, else the bubblewrap ``Box``."""
    if backend == "docker":
        from provisioning.sandbox.docker_box import DockerBox  # imports the docker SDK

        return DockerBox
    return Box


__all__ = [
    "Box",
    "BoxSpec",
    "Limits",
    "ProcessFault",
    "ProcessSpec",
    "ProcessState",
    "SandboxError",
    "box_class",
]
