"""Fingerprint against real Valkey, PostgreSQL and NATS servers on 127.0.0.1."""

import asyncio
import json
import secrets
import socket
from datetime import UTC, datetime, timedelta

import nats
import psycopg
import pytest
import redis
import redis.asyncio as aioredis

from grading.fingerprint import diff, snapshot
from provisioning.environment import Environment, ResourceInfo
from provisioning.spec import Resource
from tests.grading.realservers import nats_js, postgres, valkey  # noqa: F401


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def env(valkey, postgres, nats_js) -> Environment:  # noqa: F811
    """An environment by hand: a fresh learner role/db, a learner ACL user, S3 unreachable."""
    name = f"app_{secrets.token_hex(4)}"
    pw = secrets.token_hex(8)
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {name} LOGIN PASSWORD '{pw}'")
        conn.execute(f"CREATE DATABASE {name} OWNER {name}")
    with redis.Redis.from_url(valkey.url) as admin:
        admin.acl_setuser(name, enabled=True, passwords=[f"+{pw}"], keys=["*"], commands=["+@all"])
    now = datetime.now(UTC)
    admin_dsn = psycopg.conninfo.make_conninfo(postgres.dsn, dbname=name)
    return Environment(
        id="env-test",
        owner="tester",
        backend="handmade",
        label="fingerprint",
        created_at=now,
        expires_at=now + timedelta(hours=1),
        resources={
            Resource.REDIS: ResourceInfo(
                Resource.REDIS,
                "127.0.0.1",
                valkey.port,
                learner={"REDIS_URL": f"redis://{name}:{pw}@127.0.0.1:{valkey.port}/0"},
                admin={"url": valkey.url},
                secrets=[valkey.password, pw],
            ),
            Resource.POSTGRES: ResourceInfo(
                Resource.POSTGRES,
                "127.0.0.1",
                postgres.port,
                learner={
                    "DATABASE_URL": f"postgresql://{name}:{pw}@127.0.0.1:{postgres.port}/{name}"
                },
                admin={"dsn": admin_dsn},
                secrets=[postgres.password, pw],
            ),
            Resource.QUEUE: ResourceInfo(
                Resource.QUEUE,
                "127.0.0.1",
                nats_js.port,
                learner={"NATS_URL": nats_js.learner_url},
                admin={"url": nats_js.admin_url, "learner_url": nats_js.learner_url},
            ),
            Resource.S3: ResourceInfo(
                Resource.S3,
                "127.0.0.1",
                1,
                admin={
                    "endpoint_url": f"http://127.0.0.1:{_closed_port()}",
                    "access_key": "ak",
                    "secret_key": "sk-secret",
                    "bucket": "b",
                },
                secrets=["sk-secret"],
            ),
        },
    )


async def _learner_activity(env: Environment, stream: str) -> None:
    r = aioredis.Redis.from_url(env.bundle["REDIS_URL"])
    try:
        sha = await r.script_load("return redis.call('INCR', KEYS[1])")
        for i in range(100):
            await r.evalsha(sha, 1, f"rl:{i % 10}")
            await r.set(f"k:{i}", i)
    finally:
        await r.aclose()

    async with await psycopg.AsyncConnection.connect(env.bundle["DATABASE_URL"]) as conn:
        await conn.execute("CREATE TABLE rl_windows (k text PRIMARY KEY, n int)")
        for i in range(100):
            await conn.execute("INSERT INTO rl_windows VALUES (%s, 1)", (f"k{i}",))
        for i in range(50):
            await conn.execute("UPDATE rl_windows SET n = n + 1 WHERE k = %s", (f"k{i}",))
        await conn.commit()

    nc = await nats.connect(env.bundle["NATS_URL"])
    try:
        js = nc.jetstream()
        await js.add_stream(name=stream, subjects=[f"{stream.lower()}.>"])
        for _ in range(50):
            await js.publish(f"{stream.lower()}.x", b"event")
        sub = await js.pull_subscribe(f"{stream.lower()}.>", "worker")
        for msg in await sub.fetch(20, timeout=5):
            await msg.ack()
        await nc.flush()
    finally:
        await nc.close()


async def _after_pg_flush(env: Environment, table: str, inserts: int):
    """Snapshot once the learner's backend has flushed its table statistics (bounded)."""
    for _ in range(50):
        snap = await snapshot(env)
        tables = snap.readings["postgres"]["databases"]
        learner = tables[snap.readings["postgres"]["learner_db"]]["tables"]
        if learner.get(table, {}).get("inserts", 0) >= inserts:
            return snap
        await asyncio.sleep(0.1)
    raise AssertionError("postgres statistics never showed the learner's inserts")


async def test_fingerprint_sees_learner_activity_per_resource(env):
    before = await snapshot(env)
    await _learner_activity(env, "EVENTS")
    after = await _after_pg_flush(env, "rl_windows", 100)
    fp = diff(before, after, requests=100)

    assert fp.resources_used == ["redis", "postgres", "queue"]
    json.dumps(fp.signals)  # JSON-able

    redis_s = fp.signals["redis"]
    assert redis_s["commands"]["evalsha"] == 100 and redis_s["commands"]["set"] == 100
    assert "info" not in redis_s["commands"] and not any(
        c.startswith("client") for c in redis_s["commands"]
    )
    assert redis_s["commands"]["incr"] == 100  # run inside the script: Redis counts it too
    assert redis_s["ops"] == 301  # + SCRIPT LOAD
    assert redis_s["ops_per_request"] == 3.01
    assert redis_s["keys"] >= 110 and redis_s["keys_delta"] == 110

    pg = fp.signals["postgres"]
    t = pg["tables"]["rl_windows"]
    assert (t["inserts"], t["updates"], t["deletes"], t["rows"]) == (100, 50, 0, 100)
    assert t["idx_scans"] == 50  # the updates find rows by primary key
    assert pg["writes"] == 150 and pg["writes_per_request"] == 1.5
    queries = [s["query"] for s in pg["top_statements"]]
    assert any("INSERT INTO rl_windows" in q for q in queries)
    assert not any("pg_stat" in q for q in queries)  # the grader's own reads are excluded

    q = fp.signals["queue"]
    assert q["source"] == "system"
    assert q["streams"]["EVENTS"]["published"] == 50 and q["published"] == 50
    assert q["streams"]["EVENTS"]["consumers"]["worker"]["delivered"] == 20
    assert q["streams"]["EVENTS"]["consumers"]["worker"]["acked"] == 20
    assert q["client_messages"] >= 50

    s3 = fp.signals["s3"]
    assert s3["note"].startswith("could not read:") and "sk-secret" not in s3["note"]

    arch = fp.architecture()
    assert arch.resources_used == fp.resources_used and arch.signals is fp.signals


async def test_grader_reads_alone_use_nothing(env):
    before = await snapshot(env)
    middle = await snapshot(env)
    after = await snapshot(env)
    assert middle.readings.keys() == after.readings.keys()
    fp = diff(before, after, requests=1000)
    assert fp.resources_used == []
    assert fp.signals["redis"]["commands"] == {}
    assert fp.signals["postgres"]["tables"] == {}
    assert fp.signals["queue"]["published"] == 0


async def test_queue_falls_back_to_the_learner_account(env):
    queue = env.resources[Resource.QUEUE]
    queue.admin["url"] = f"nats://127.0.0.1:{_closed_port()}"
    before = await snapshot(env)
    nc = await nats.connect(env.bundle["NATS_URL"])
    try:
        js = nc.jetstream()
        await js.add_stream(name="FALLBACK", subjects=["fallback.>"])
        for _ in range(30):
            await js.publish("fallback.x", b"e")
    finally:
        await nc.close()
    after = await snapshot(env)
    q = diff(before, after, requests=10).signals["queue"]
    assert q["source"] == "learner" and "system account unavailable" in q["note"]
    assert q["streams"]["FALLBACK"]["published"] == 30


async def test_unreachable_resources_become_notes(env):
    env.resources[Resource.REDIS].admin["url"] = f"redis://127.0.0.1:{_closed_port()}/0"
    pg = env.resources[Resource.POSTGRES]
    pg.admin["dsn"] = psycopg.conninfo.make_conninfo(pg.admin["dsn"], port=_closed_port())
    before = await snapshot(env)
    after = await snapshot(env)
    fp = diff(before, after, requests=10)
    assert "redis" not in fp.resources_used and "postgres" not in fp.resources_used
    for name in ("redis", "postgres", "s3"):
        assert fp.signals[name]["note"].startswith("could not read:")
    pw = pg.secrets[0]
    assert pw not in json.dumps(fp.signals)
