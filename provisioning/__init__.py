"""Ephemeral infrastructure: specs, backends, faults, reaping.

The public surface is re-exported here; backends live in their own modules.
"""

from provisioning.backends import make_backend
from provisioning.environment import Environment, ResourceInfo
from provisioning.faults import FaultAction, FaultRecord
from provisioning.spec import EnvironmentSpec, Resource

__all__ = [
    "Environment",
    "EnvironmentSpec",
    "FaultAction",
    "FaultRecord",
    "Resource",
    "ResourceInfo",
    "make_backend",
]
