"""What only the docker backend promises: labels, limits, users, images and container faults."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import docker
import pytest
import redis.asyncio as aioredis

from provisioning.backend import Backend, ProvisioningError
from provisioning.backends import make_backend
from provisioning.docker import images
from provisioning.docker.backend import DockerBackend
from provisioning.environment import Environment
from provisioning.faults import FaultAction
from provisioning.spec import Resource

from .clients import TIMEOUT
from .conftest import spec

KINDS = (Resource.POSTGRES, Resource.REDIS, Resource.PROVIDER)


@pytest.fixture(scope="module")
async def env(backend: Backend) -> AsyncIterator[Environment]:
    if backend.name != "docker":
        pytest.skip("docker backend only")
    made = await backend.create("env-docker", spec(KINDS))
    yield made
    await backend.destroy(made.id)


def _containers(
    backend: Backend, env: Environment
) -> dict[str, docker.models.containers.Container]:
    client: docker.DockerClient = backend.client  # type: ignore[attr-defined]
    found = client.containers.list(all=True, filters={"label": f"cruscible.env={env.id}"})
    return {c.labels["cruscible.resource"]: c for c in found}


def test_containers_are_labelled_limited_and_unprivileged(
    backend: Backend, env: Environment
) -> None:
    containers = _containers(backend, env)
    assert set(containers) == {"postgres", "redis"}, "the provider runs as a local process"
    for kind, container in containers.items():
        labels = container.labels
        assert labels["cruscible.env"] == env.id
        assert labels["cruscible.data_dir"] == str(backend.data_dir)  # type: ignore[attr-defined]
        assert datetime.fromisoformat(labels["cruscible.expires"]) == env.expires_at
        host = container.attrs["HostConfig"]
        assert host["Memory"] > 0 and host["NanoCpus"] > 0, kind
        assert host["NetworkMode"] == "host"
        assert not container.attrs["Config"]["User"].startswith("0")
        assert container.image.tags[0] == images.configured()[Resource(kind)]


async def test_restart_keeps_the_container_and_lose_data_makes_a_new_one(
    backend: Backend, env: Environment
) -> None:
    before = _containers(backend, env)["redis"].id
    client = aioredis.from_url(env.bundle["REDIS_URL"], socket_timeout=TIMEOUT)
    await client.set("k", "v")
    await client.aclose()
    await backend.fault(env.id, Resource.REDIS, FaultAction.RESTART)
    assert _containers(backend, env)["redis"].id == before
    await backend.fault(env.id, Resource.REDIS, FaultAction.RESTART_LOSE_DATA)
    assert _containers(backend, env)["redis"].id != before
    client = aioredis.from_url(env.bundle["REDIS_URL"], socket_timeout=TIMEOUT)
    assert await client.dbsize() == 0
    await client.aclose()


async def test_pause_freezes_the_container(backend: Backend, env: Environment) -> None:
    await backend.fault(env.id, Resource.POSTGRES, FaultAction.PAUSE)
    assert _containers(backend, env)["postgres"].status == "paused"
    health = {h.resource: h for h in await backend.health(env.id)}
    assert health[Resource.POSTGRES].detail == "paused"
    await backend.fault(env.id, Resource.POSTGRES, FaultAction.RESUME)
    assert all(h.ok for h in await backend.health(env.id))


def test_images_are_official_unless_overridden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CRUSCIBLE_DOCKER_IMAGE_REDIS", raising=False)
    monkeypatch.setenv("CRUSCIBLE_DOCKER_IMAGE_QUEUE", "example/nats:9")
    chosen = images.configured({Resource.S3: "example/weed:1"})
    assert chosen[Resource.REDIS] == "valkey/valkey:8"
    assert chosen[Resource.QUEUE] == "example/nats:9"
    assert chosen[Resource.S3] == "example/weed:1"


def test_an_unreachable_engine_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/nothing.sock")
    with pytest.raises(ProvisioningError, match="cannot reach the Docker engine"):
        make_backend("docker", tmp_path / "data")


def test_bridge_mode_servers_listen_on_all_container_addresses(
    backend: Backend, env: Environment, data_dir: Path
) -> None:
    bridged = DockerBackend(data_dir / "bridged", client=backend.client, network="bridge")  # type: ignore[attr-defined]
    assert bridged._slot("env-x", Resource.REDIS).bind == "0.0.0.0"
    assert bridged._slot("env-x", Resource.PROVIDER).bind == "127.0.0.1"
