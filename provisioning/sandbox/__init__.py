"""The local sandbox for learner code: bubblewrap, a private network namespace with only
loopback, cgroups (v1 or v2) and rlimits, socket-file relays, and the registry egress proxy."""

from provisioning.sandbox.box import Box
from provisioning.sandbox.limits import Limits
from provisioning.sandbox.spec import BoxSpec, ProcessSpec, ProcessState, SandboxError

__all__ = ["Box", "BoxSpec", "Limits", "ProcessSpec", "ProcessState", "SandboxError"]
