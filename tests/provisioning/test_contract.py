"""The backend contract: what a learner gets works, is private, and is not admin."""

from __future__ import annotations

import asyncio
import stat
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
import redis.asyncio as aioredis
from botocore.exceptions import ClientError
from nats.errors import Error as NatsError
from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError

from provisioning.backend import Backend
from provisioning.environment import Environment
from provisioning.spec import Resource

from .clients import TIMEOUT, admin_s3, learner_s3, nats_connect, with_port

BUNDLE = {
    "DATABASE_URL", "REDIS_URL", "S3_ENDPOINT_URL", "S3_BUCKET", "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "NATS_URL", "PROVIDER_URL", "PROVIDER_TOKEN",
}  # fmt: skip
ADMIN_KEYS = {
    Resource.POSTGRES: {"dsn"},
    Resource.REDIS: {"url"},
    Resource.S3: {"endpoint_url", "access_key", "secret_key", "bucket"},
    Resource.QUEUE: {"url", "learner_url"},
    Resource.PROVIDER: {"url", "admin_token"},
}


def test_bundle_has_the_public_names(env_a: Environment) -> None:
    bundle = env_a.bundle
    assert set(bundle) == BUNDLE | {"RATE_LIMIT"}
    assert bundle["RATE_LIMIT"] == "20"
    assert bundle["AWS_REGION"] == "us-east-1"
    for name, scheme in [
        ("DATABASE_URL", "postgresql"),
        ("REDIS_URL", "redis"),
        ("NATS_URL", "nats"),
        ("S3_ENDPOINT_URL", "http"),
        ("PROVIDER_URL", "http"),
    ]:
        url = urlsplit(bundle[name])
        assert url.scheme == scheme and url.hostname == "127.0.0.1" and url.port
    for kind, keys in ADMIN_KEYS.items():
        assert set(env_a.admin(kind)) == keys
    secrets = env_a.secrets()
    assert bundle["AWS_SECRET_ACCESS_KEY"] in secrets
    assert all(
        urlsplit(bundle[n]).password in secrets for n in ("DATABASE_URL", "REDIS_URL", "NATS_URL")
    )
    assert urlsplit(env_a.admin(Resource.POSTGRES)["dsn"]).password in secrets


def test_each_environment_has_its_own_credentials(env_a: Environment, env_b: Environment) -> None:
    assert not set(env_a.secrets()) & set(env_b.secrets())
    assert {i.port for i in env_a.resources.values()}.isdisjoint(
        {i.port for i in env_b.resources.values()}
    )


async def test_metadata_is_persisted_privately(backend: Backend, env_a: Environment) -> None:
    again = await backend.get(env_a.id)
    assert again is not None and again.bundle == env_a.bundle
    assert env_a.id in {e.id for e in await backend.list()}
    path = Path(backend.envs_dir) / env_a.id / "environment.json"  # type: ignore[attr-defined]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def _listening(port: int) -> list[str]:
    """Local addresses (hex, as in /proc/net/tcp*) listening on ``port``."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            addr, hexport = fields[1].split(":")
            if fields[3] == "0A" and int(hexport, 16) == port:
                found.append(addr)
    return found


def test_servers_listen_on_loopback_only(env_a: Environment) -> None:
    """Local processes, host-network containers and ports published by docker alike."""
    ports = [p for info in env_a.resources.values() for p in info.extra["ports"].values()]
    assert len(ports) >= 4
    for port in ports:
        assert _listening(port) == ["0100007F"], f"port {port}"


async def test_health_is_ok(backend: Backend, env_a: Environment) -> None:
    health = await backend.health(env_a.id)
    assert {h.resource for h in health} == set(Resource)
    assert all(h.ok for h in health), health


# -- PostgreSQL ----------------------------------------------------------------


async def test_postgres_learner_owns_a_working_database(env_a: Environment) -> None:
    async with await psycopg.AsyncConnection.connect(
        env_a.bundle["DATABASE_URL"], autocommit=True
    ) as conn:
        await conn.execute("CREATE TABLE hits (key text PRIMARY KEY, n int NOT NULL)")
        await conn.execute(
            "INSERT INTO hits VALUES ('a', 1) ON CONFLICT (key) DO UPDATE SET n = hits.n + 1"
        )
        cur = await conn.execute("SELECT n FROM hits WHERE key = 'a'")
        assert await cur.fetchone() == (1,)
        cur = await conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        assert await cur.fetchone() == (False,)


async def test_postgres_learner_cannot_do_superuser_things(env_a: Environment) -> None:
    async with await psycopg.AsyncConnection.connect(
        env_a.bundle["DATABASE_URL"], autocommit=True
    ) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await conn.execute("COPY (SELECT 1) TO PROGRAM 'true'")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await conn.execute("ALTER SYSTEM SET work_mem = '1GB'")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await conn.execute("CREATE ROLE intruder SUPERUSER")


async def test_postgres_admin_reads_statement_stats(env_a: Environment) -> None:
    async with await psycopg.AsyncConnection.connect(
        env_a.bundle["DATABASE_URL"], autocommit=True
    ) as conn:
        await conn.execute("SELECT 42 AS stats_probe")
    async with await psycopg.AsyncConnection.connect(
        env_a.admin(Resource.POSTGRES)["dsn"], autocommit=True
    ) as conn:
        cur = await conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        assert await cur.fetchone() == (True,)
        cur = await conn.execute(
            "SELECT count(*) FROM pg_stat_statements WHERE query LIKE '%stats_probe%'"
        )
        row = await cur.fetchone()
        assert row is not None and row[0] >= 1


# -- Valkey --------------------------------------------------------------------


async def test_redis_learner_can_set_get_and_eval(env_a: Environment) -> None:
    client = aioredis.from_url(env_a.bundle["REDIS_URL"], socket_timeout=TIMEOUT)
    try:
        assert await client.set("greeting", "hi")
        assert await client.get("greeting") == b"hi"
        script = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
        assert await client.eval(script, 1, "counter", 5) == 5
    finally:
        await client.aclose()


async def test_redis_learner_cannot_administer(env_a: Environment) -> None:
    client = aioredis.from_url(env_a.bundle["REDIS_URL"], socket_timeout=TIMEOUT)
    try:
        for command in (("CONFIG", "GET", "dir"), ("FLUSHALL",), ("SHUTDOWN",), ("ACL", "LIST")):
            with pytest.raises(NoPermissionError):
                await client.execute_command(*command)
    finally:
        await client.aclose()
    admin = aioredis.from_url(env_a.admin(Resource.REDIS)["url"], socket_timeout=TIMEOUT)
    try:
        assert int((await admin.config_get("maxmemory"))["maxmemory"]) == 64 * 1024 * 1024
    finally:
        await admin.aclose()


# -- S3 ------------------------------------------------------------------------


def test_s3_learner_uses_its_bucket_only(env_a: Environment) -> None:
    bundle = env_a.bundle
    s3 = learner_s3(bundle)
    s3.put_object(Bucket=bundle["S3_BUCKET"], Key="uploads/1", Body=b"a,b\n1,2\n")
    assert (
        s3.get_object(Bucket=bundle["S3_BUCKET"], Key="uploads/1")["Body"].read() == b"a,b\n1,2\n"
    )
    admin = admin_s3(env_a.admin(Resource.S3))
    admin.create_bucket(Bucket="someone-else")
    admin.put_object(Bucket="someone-else", Key="secret", Body=b"x")
    for attempt in (
        lambda: s3.get_object(Bucket="someone-else", Key="secret"),
        lambda: s3.put_object(Bucket="someone-else", Key="k", Body=b"y"),
        lambda: s3.list_objects_v2(Bucket="someone-else"),
    ):
        with pytest.raises(ClientError) as err:
            attempt()
        assert err.value.response["Error"]["Code"] == "AccessDenied"


# -- NATS ----------------------------------------------------------------------


async def test_nats_learner_publishes_and_consumes_with_jetstream(env_a: Environment) -> None:
    nc = await nats_connect(env_a.bundle["NATS_URL"])
    try:
        js = nc.jetstream()
        await js.add_stream(name="EVENTS", subjects=["events.>"])
        ack = await js.publish("events.created", b"hello")
        assert ack.stream == "EVENTS" and ack.seq == 1
        sub = await js.pull_subscribe("events.>", durable="worker")
        msgs = await sub.fetch(1, timeout=TIMEOUT)
        assert [m.data for m in msgs] == [b"hello"]
        await msgs[0].ack()
    finally:
        await nc.close()


# -- isolation -----------------------------------------------------------------


async def _pg_refused(url: str) -> None:
    with pytest.raises(
        psycopg.OperationalError, match="password authentication failed|no password"
    ):
        await psycopg.AsyncConnection.connect(url, connect_timeout=3)


async def _redis_refused(url: str) -> None:
    client = aioredis.from_url(url, socket_timeout=TIMEOUT)
    try:
        with pytest.raises((AuthenticationError, ResponseError)):
            await client.ping()
    finally:
        await client.aclose()


async def _nats_refused(url: str) -> None:
    with pytest.raises((NatsError, OSError)):
        nc = await nats_connect(url)
        await nc.close()


async def test_credentials_do_not_cross_environments(
    env_a: Environment, env_b: Environment
) -> None:
    a, b = env_a.bundle, env_b.bundle
    await _pg_refused(with_port(a["DATABASE_URL"], env_b.resources[Resource.POSTGRES].port))
    await _pg_refused(
        with_port(env_a.admin(Resource.POSTGRES)["dsn"], env_b.resources[Resource.POSTGRES].port)
    )
    await _redis_refused(with_port(a["REDIS_URL"], env_b.resources[Resource.REDIS].port))
    await _redis_refused(
        with_port(env_a.admin(Resource.REDIS)["url"], env_b.resources[Resource.REDIS].port)
    )
    await _nats_refused(with_port(a["NATS_URL"], env_b.resources[Resource.QUEUE].port))
    await _nats_refused(
        with_port(env_a.admin(Resource.QUEUE)["url"], env_b.resources[Resource.QUEUE].port)
    )
    s3 = learner_s3(a, endpoint=b["S3_ENDPOINT_URL"])
    for bucket in (a["S3_BUCKET"], b["S3_BUCKET"]):
        with pytest.raises(ClientError) as err:
            s3.list_objects_v2(Bucket=bucket)
        assert err.value.response["Error"]["Code"] in {"InvalidAccessKeyId", "AccessDenied"}


async def test_no_unauthenticated_access(env_a: Environment) -> None:
    pg = urlsplit(env_a.bundle["DATABASE_URL"])
    await _pg_refused(f"postgresql://{pg.username}@127.0.0.1:{pg.port}/app")
    await _pg_refused(f"postgresql://postgres@127.0.0.1:{pg.port}/postgres")
    await _redis_refused(f"redis://127.0.0.1:{env_a.resources[Resource.REDIS].port}/0")
    await _nats_refused(f"nats://127.0.0.1:{env_a.resources[Resource.QUEUE].port}")
    bucket_url = f"{env_a.bundle['S3_ENDPOINT_URL']}/{env_a.bundle['S3_BUCKET']}"
    for url in (bucket_url, bucket_url + "/uploads/1"):
        with pytest.raises(urllib.error.HTTPError) as err:
            await asyncio.to_thread(urllib.request.urlopen, url, timeout=TIMEOUT)
        assert err.value.code == 403


def test_no_secret_is_logged(env_a: Environment, env_b: Environment, log_lines: list[str]) -> None:
    assert any(env_a.id in line for line in log_lines)
    text = "\n".join(log_lines)
    for secret in env_a.secrets() + env_b.secrets():
        assert secret not in text


def test_unknown_backend_is_refused(tmp_path: Path) -> None:
    from provisioning.backend import ProvisioningError
    from provisioning.backends import make_backend

    with pytest.raises(ProvisioningError, match="unknown provisioning backend"):
        make_backend("kubernetes", tmp_path)
