"""DockerBackend: the local backend's drivers and lifecycle, with servers in containers.

Configuration, credentials, port leases, readiness probes and faults are the
``local`` backend's; only where servers run differs. The provider (a Python
module serving ``PROVIDER_URL``) still runs as a local process.

Environments are exposed (``CRUSCIBLE_PUBLIC_HOST``, :mod:`provisioning.tls`) as by the local
backend: each container serves plain text on 127.0.0.1 and the same TLS relays, host processes
(see :mod:`provisioning.docker.containers`), serve the public port. Only with the host network:
there the server sees the relay's connections from the relay's own loopback address
(``tlsrelay.SOURCE``), which PostgreSQL's ``pg_hba.conf`` lets log in as the learner's role
only. Behind a bridge, a published port reaches the server from the bridge's gateway, whoever
connected (Docker's userland proxy or its NAT rules:
https://docs.docker.com/engine/network/port-publishing/), so PostgreSQL could not
tell the relay's connections from the grader's and would let the superuser log in through the
public port: that combination is refused.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import docker
from docker.errors import DockerException

from provisioning.backend import ProvisioningError
from provisioning.docker import images
from provisioning.docker.containers import ContainerRuntime, Limits, container_user
from provisioning.local.backend import LocalBackend
from provisioning.local.driver import Slot
from provisioning.local.runtime import ProcessRuntime, Runtime
from provisioning.spec import Resource
from provisioning.tls import ENV_PUBLIC_HOST, Exposure

NETWORK_ENV = "CRUSCIBLE_DOCKER_NETWORK"
NETWORKS = ("bridge", "host")
LIMITS: dict[Resource, Limits] = {
    Resource.POSTGRES: Limits("512m", 1.0),
    Resource.REDIS: Limits("192m", 1.0),
    Resource.S3: Limits("512m", 1.0),
    Resource.QUEUE: Limits("384m", 1.0),
}


def network_setting(network: str | None = None) -> str:
    """The network mode: ``network``, else ``$CRUSCIBLE_DOCKER_NETWORK``, else ``bridge``."""
    chosen = network or os.environ.get(NETWORK_ENV, "bridge")
    if chosen not in NETWORKS:
        raise ProvisioningError(f"docker network must be one of {NETWORKS}")
    return chosen


def check_exposable(network: str) -> None:
    """ProvisioningError (one line) unless environments can be exposed on ``network``: only
    the host network lets PostgreSQL tell the relay's connections apart (module docstring)."""
    if network != "host":
        raise ProvisioningError(
            f"the docker backend exposes environments ({ENV_PUBLIC_HOST}) only with "
            f"{NETWORK_ENV}=host: behind a {network} network PostgreSQL sees the public relay's "
            f"connections from the same gateway address as the grader's and could not refuse "
            f"its superuser there"
        )


class DockerBackend(LocalBackend):
    """PostgreSQL, Valkey, SeaweedFS and NATS containers; state under ``data_dir``.

    ``network`` is ``bridge`` (ports published on 127.0.0.1 only; the default) or
    ``host`` (servers bind 127.0.0.1 on the host, for engines without a bridge);
    it defaults to ``$CRUSCIBLE_DOCKER_NETWORK``. ``image_overrides`` wins over
    ``$CRUSCIBLE_DOCKER_IMAGE_<KIND>``, which wins over the official images. ``exposure``
    (host network only) serves every environment over TLS on the public host.
    """

    name = "docker"

    def __init__(
        self,
        data_dir: Path,
        port_range: tuple[int, int] = (20000, 29999),
        *,
        ready_timeout: float = 30.0,
        client: docker.DockerClient | None = None,
        image_overrides: Mapping[Resource, str] | None = None,
        network: str | None = None,
        limits: Mapping[Resource, Limits] | None = None,
        exposure: Exposure | None = None,
    ) -> None:
        self.network = network_setting(network)
        if exposure is not None:
            check_exposable(self.network)
        try:
            self.client = client or docker.from_env(max_pool_size=32)
            self.client.ping()
        except DockerException as exc:
            raise ProvisioningError(f"cannot reach the Docker engine: {exc}") from None
        self.images = images.configured(image_overrides)
        self.limits = {**LIMITS, **(limits or {})}
        super().__init__(data_dir, port_range, ready_timeout=ready_timeout, exposure=exposure)

    def _make_runtimes(self) -> dict[Resource, Runtime]:
        containers = ContainerRuntime(
            self.client,
            self.data_dir,
            self.images,
            images.ENTRYPOINT,
            network=self.network,
            user=container_user(self.run_as.uid, self.run_as.gid),
            limits=self.limits,
        )
        runtimes: dict[Resource, Runtime] = dict.fromkeys(self.images, containers)
        runtimes[Resource.PROVIDER] = ProcessRuntime(
            self.data_dir, self.run_as, (Resource.PROVIDER,)
        )
        return runtimes

    def _slot(self, env_id: str, kind: Resource) -> Slot:
        slot = super()._slot(env_id, kind)
        if self.network == "host" or kind not in self.images:
            return slot
        return replace(slot, bind="0.0.0.0")
