"""Environments of the docker backend exposed on a public host: the same promises as the local
backend's (``test_tls.py``), with the servers in containers on the host network and the TLS
relays as host processes.

The tests imported from ``test_tls.py`` run here against this module's ``envs`` and
``ca_file``: two docker environments exposed on 127.0.0.2 (another loopback address: no
packet leaves the machine). Skipped only when no Docker engine can run here.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import ssl
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from provisioning.docker.backend import DockerBackend
from provisioning.environment import Environment
from provisioning.faults import FaultAction
from provisioning.local import processes
from provisioning.spec import EnvironmentSpec, Resource
from provisioning.tls import Exposure, from_env

from . import test_tls as local
from .conftest import containers_of
from .test_tls import (
    PROVIDER_MODULE,
    PUBLIC,
    _nats_connect,
    _port,
    _repeated_bad_nats_passwords_are_refused,
    _repeated_bad_passwords_are_refused,
    _repeated_bad_provider_tokens_are_refused,
    _repeated_bad_s3_signatures_are_refused,
)

# test_tls.py's tests, in its order (some count the calls the ones before made): here they
# run against this module's fixtures
test_bundle_names_the_public_host_and_carries_the_ca = (
    local.test_bundle_names_the_public_host_and_carries_the_ca
)
test_postgres_refuses_plain_text_and_accepts_verify_full = (
    local.test_postgres_refuses_plain_text_and_accepts_verify_full
)
test_valkey_refuses_plain_text_and_accepts_rediss = (
    local.test_valkey_refuses_plain_text_and_accepts_rediss
)
test_s3_refuses_plain_text_and_accepts_https = local.test_s3_refuses_plain_text_and_accepts_https
test_nats_refuses_plain_text_and_accepts_tls = local.test_nats_refuses_plain_text_and_accepts_tls
test_provider_refuses_plain_text_and_accepts_https = (
    local.test_provider_refuses_plain_text_and_accepts_https
)
test_another_environments_credentials_are_refused = (
    local.test_another_environments_credentials_are_refused
)
test_the_admin_accounts_cannot_log_in_through_the_public_ports = (
    local.test_the_admin_accounts_cannot_log_in_through_the_public_ports
)
test_postgres_slows_failed_authentication = local.test_postgres_slows_failed_authentication
test_the_grader_reads_an_exposed_queue_through_its_system_account = (
    local.test_the_grader_reads_an_exposed_queue_through_its_system_account
)

URLS = ("DATABASE_URL", "REDIS_URL", "S3_ENDPOINT_URL", "NATS_URL", "PROVIDER_URL")


@pytest.fixture(scope="module")
def tls_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="cruscible-tls-docker-", dir="/tmp"))
    path.chmod(0o711)  # servers run as an unprivileged user when tests run as root
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def exposure(tls_dir: Path) -> Exposure:
    found = from_env(tls_dir, {"CRUSCIBLE_PUBLIC_HOST": PUBLIC, "CRUSCIBLE_LISTEN_HOST": PUBLIC})
    assert found is not None
    return found


@pytest.fixture(scope="module")
async def backend(
    docker_engine: str, tls_dir: Path, exposure: Exposure
) -> AsyncIterator[DockerBackend]:
    """A docker backend on the host network (the engine here has no bridge), with the local
    images ``docker_engine`` built and configured."""
    made = DockerBackend(tls_dir, network="host", exposure=exposure)
    yield made
    for env in await made.list():
        await made.destroy(env.id)
    await made.close()


@pytest.fixture(scope="module")
async def envs(backend: DockerBackend) -> AsyncIterator[tuple[Environment, Environment]]:
    spec = EnvironmentSpec(resources=tuple(Resource), provider_module=PROVIDER_MODULE)
    first = await backend.create("dtls-a", spec)
    second = await backend.create("dtls-b", spec)
    try:
        yield first, second
    finally:
        await backend.destroy(first.id)
        await backend.destroy(second.id)


@pytest.fixture(scope="module")
def ca_file(envs: tuple[Environment, Environment], tls_dir: Path) -> Path:
    """The CA as a learner saves it: from the bundle's CA_CERT_PEM."""
    path = tls_dir / envs[0].bundle["CA_CERT_FILE"]
    path.write_text(envs[0].bundle["CA_CERT_PEM"] + "\n")
    return path


def _relays(backend: DockerBackend, env_id: str) -> list[processes.Marked]:
    return [
        m
        for m in processes.scan(backend.data_dir)
        if m.env_id == env_id and m.resource.endswith(".relay")
    ]


def _refused(port: int) -> bool:
    try:
        socket.create_connection((PUBLIC, port), timeout=3).close()
    except ConnectionRefusedError:
        return True
    return False


def test_servers_run_in_containers_on_loopback_and_relays_on_the_host(
    backend: DockerBackend, envs: tuple[Environment, Environment]
) -> None:
    """Every server is a container on the host network bound to 127.0.0.1; each has one relay
    process on the host, listening on the public address; the provider serves its public site
    itself."""
    env = envs[0]
    assert len(containers_of(backend, env.id)) == 4
    relays = _relays(backend, env.id)
    assert sorted(m.resource for m in relays) == sorted(
        f"{k.value}.relay" for k in (Resource.POSTGRES, Resource.REDIS, Resource.S3, Resource.QUEUE)
    )
    for kind in (Resource.POSTGRES, Resource.REDIS, Resource.QUEUE):
        with socket.create_connection(("127.0.0.1", env.resources[kind].port), timeout=3):
            pass  # the container's own plain-text port, on loopback
        assert _refused(env.resources[kind].port), kind  # not on the public address


async def test_a_destroyed_environments_ports_are_closed(
    backend: DockerBackend, ca_file: Path
) -> None:
    """The relays' throttles hold for servers in containers; destroying the environment stops
    its relays with its containers: every public port is closed."""
    env = await backend.create(
        "dtls-c", EnvironmentSpec(resources=tuple(Resource), provider_module=PROVIDER_MODULE)
    )
    ports = [_port(env.bundle[name]) for name in URLS]
    for port in ports:
        with socket.create_connection((PUBLIC, port), timeout=3):
            pass
    await _repeated_bad_passwords_are_refused(env, ca_file)
    await _repeated_bad_nats_passwords_are_refused(env, ca_file)
    await _repeated_bad_s3_signatures_are_refused(env, ca_file)
    await _repeated_bad_provider_tokens_are_refused(env, ca_file)
    await backend.destroy(env.id)
    assert all(_refused(port) for port in ports)
    assert not _relays(backend, env.id) and not containers_of(backend, env.id)


async def test_faults_stop_and_start_the_relay_with_its_container(
    backend: DockerBackend, envs: tuple[Environment, Environment], ca_file: Path
) -> None:
    """A killed server's public port closes (its relay goes with the container), a start opens
    it again; restart and restart-lose-data go through the relay as with local servers."""
    env = envs[1]
    url = env.bundle["DATABASE_URL"]
    async with await psycopg.AsyncConnection.connect(
        url, sslrootcert=str(ca_file), autocommit=True, connect_timeout=5
    ) as conn:
        await conn.execute("CREATE TABLE kept (v int); INSERT INTO kept VALUES (7)")
    await backend.fault(env.id, Resource.POSTGRES, FaultAction.RESTART)
    async with await psycopg.AsyncConnection.connect(
        url, sslrootcert=str(ca_file), connect_timeout=5
    ) as conn:
        assert await (await conn.execute("SELECT v FROM kept")).fetchone() == (7,)
    public = _port(env.bundle["REDIS_URL"])
    client = redis.Redis.from_url(
        env.bundle["REDIS_URL"], ssl_ca_certs=str(ca_file), socket_timeout=5
    )
    try:
        client.set("gone", "1")
        await backend.fault(env.id, Resource.REDIS, FaultAction.KILL)
        assert _refused(public)
        assert not any(m.resource == "redis.relay" for m in _relays(backend, env.id))
        await backend.fault(env.id, Resource.REDIS, FaultAction.START)
        client.connection_pool.disconnect()
        assert client.ping()
        await backend.fault(env.id, Resource.REDIS, FaultAction.RESTART_LOSE_DATA)
        client.connection_pool.disconnect()
        assert client.get("gone") is None
    finally:
        client.close()
    await backend.fault(env.id, Resource.QUEUE, FaultAction.RESTART)
    nc = await _nats_connect(env.bundle["NATS_URL"], ssl.create_default_context(cafile=ca_file))
    try:
        sub = await nc.subscribe("after.restart")
        await nc.publish("after.restart", b"back")
        assert (await sub.next_msg(timeout=5)).data == b"back"
    finally:
        await nc.close()
    health = {h.resource: h.ok for h in await backend.health(env.id)}
    assert all(health.values()), health
    assert len(_relays(backend, env.id)) == 4  # one each, none left over from the faults


async def test_relays_of_a_vanished_environment_are_stopped(backend: DockerBackend) -> None:
    """An environment whose directory is gone (a crash mid-destroy) loses its containers and
    its relays at the next listing, as the local backend's servers do."""
    env = await backend.create("dtls-d", EnvironmentSpec(resources=(Resource.REDIS,)))
    public = _port(env.bundle["REDIS_URL"])
    shutil.rmtree(backend.envs_dir / env.id)
    await backend.list()
    assert _refused(public)
    assert not _relays(backend, env.id) and not containers_of(backend, env.id)
    await backend.destroy(env.id)  # its leases and lock


def test_a_relay_is_ready_only_once_it_listens_itself() -> None:
    """The runtime waits for the relay's own listening socket before it starts the server: a
    listener of another process on the same port does not count."""
    from provisioning.docker.containers import _listening

    with socket.create_server(("127.0.0.1", 0)) as mine:
        port = mine.getsockname()[1]
        assert _listening(os.getpid(), port)
        assert not _listening(os.getppid(), port)
    with socket.socket() as bound:  # bound, not listening
        bound.bind(("127.0.0.1", 0))
        assert not _listening(os.getpid(), bound.getsockname()[1])


async def test_a_public_port_taken_by_another_process_is_leased_again(
    backend: DockerBackend,
    ca_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A foreign listener on the public address holds the port leased for the relay (the lease
    checks loopback only): the relay fails to bind before its container starts, and the
    backend retries on other ports, as with local servers."""
    from provisioning.local.ports import port_is_free

    ports = [p for p in random.sample(backend.ports.range, 200) if port_is_free(p)]
    server, taken = ports[0], ports[1]
    with socket.create_server((PUBLIC, taken)):
        monkeypatch.setattr(backend.ports, "_candidates", lambda: ports)  # server, then public
        env = await backend.create("dtls-e", EnvironmentSpec(resources=(Resource.REDIS,)))
        try:
            assert "was taken by another process; retrying" in caplog.text
            url = env.bundle["REDIS_URL"]
            assert _port(url) not in (server, taken)
            client = redis.Redis.from_url(url, ssl_ca_certs=str(ca_file), socket_timeout=5)
            try:
                assert client.ping()
            finally:
                client.close()
        finally:
            await backend.destroy(env.id)
