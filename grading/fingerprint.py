"""How a design used its resources, read from the environment's admin side.

``snapshot(env)`` reads each resource's counters (take one before and one after load,
the latter about a second after load ends — PostgreSQL backends flush their table
statistics at most once a second — and before any verification reads the store);
``diff(before, after, requests)`` turns the change into a ``Fingerprint``. A resource
counts as *used* when the learner's activity changed its counters meaningfully: at
least ``max(MIN_OPS, MIN_OPS_PER_REQUEST * requests)`` operations. The grader's own
reads are left out (Redis connection/INFO commands, statements run by the superuser).
Every reading is guarded: a failure becomes a ``note`` in the signals, never an error.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import boto3
import nats
import psycopg
import redis.asyncio as aioredis
from botocore.config import Config
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from grading.report import Architecture
from provisioning.environment import Environment, ResourceInfo
from provisioning.spec import Resource
from provisioning.tls import admin_tls

READ_TIMEOUT_S = 5.0
# PostgreSQL publishes table statistics about once a second: wait this long after the last
# request before a snapshot meant to see it (https://www.postgresql.org/docs/current/monitoring-stats.html).
STATS_FLUSH_S = 1.1
MIN_OPS = 5
MIN_OPS_PER_REQUEST = 0.01
MAX_S3_OBJECTS = 200_000
TOP = 10
# connection housekeeping and introspection: the grader's reads, or not "using" Redis
_REDIS_IGNORED = frozenset(
    {"info", "hello", "auth", "ping", "select", "client", "command", "config", "quit", "reset"}
)

Reading = dict[str, Any]


@dataclass
class Snapshot:
    taken_at: float  # epoch seconds
    readings: dict[str, Reading] = field(default_factory=dict)  # resource -> counters or {"error"}


@dataclass
class Fingerprint:
    resources_used: list[str]
    signals: dict[str, Any]

    def architecture(self) -> Architecture:
        return Architecture(resources_used=list(self.resources_used), signals=self.signals)


# --- reading -------------------------------------------------------------------------


async def _read_redis(info: ResourceInfo) -> Reading:
    client = aioredis.Redis.from_url(info.admin["url"], socket_timeout=READ_TIMEOUT_S)
    try:
        stats = await client.info("commandstats")
        general = await client.info()
    finally:
        await client.aclose()
    return {
        "commands": {name.removeprefix("cmdstat_"): v["calls"] for name, v in stats.items()},
        "keys": sum(v.get("keys", 0) for db, v in general.items() if db.startswith("db")),
        "total_commands": general.get("total_commands_processed", 0),
        "memory_bytes": general.get("used_memory", 0),
    }


_PG_TABLES = """
SELECT schemaname, relname, n_tup_ins, n_tup_upd, n_tup_del, seq_scan,
       coalesce(idx_scan, 0), n_live_tup
FROM pg_stat_user_tables
"""
_PG_STATEMENTS = """
SELECT queryid, query, calls, total_exec_time, rows
FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND userid <> (SELECT oid FROM pg_roles WHERE rolname = current_user)
ORDER BY calls DESC
LIMIT 100
"""


async def _read_pg_database(dsn: str, *, statements: bool) -> Reading:
    out: Reading = {"tables": {}}
    async with await psycopg.AsyncConnection.connect(
        dsn, autocommit=True, connect_timeout=int(READ_TIMEOUT_S)
    ) as conn:
        for schema, table, ins, upd, dele, seq, idx, live in await (
            await conn.execute(_PG_TABLES)
        ).fetchall():
            name = table if schema == "public" else f"{schema}.{table}"
            out["tables"][name] = {
                "inserts": ins, "updates": upd, "deletes": dele,
                "seq_scans": seq, "idx_scans": idx, "rows": live,
            }  # fmt: skip
        if statements:
            try:
                await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                rows = await (await conn.execute(_PG_STATEMENTS)).fetchall()
                out["statements"] = {
                    str(qid): {"query": q, "calls": c, "total_ms": ms, "rows": r}
                    for qid, q, c, ms, r in rows
                }
            except psycopg.Error as exc:
                out["statements_note"] = f"pg_stat_statements unavailable: {_first_line(exc)}"
    return out


async def _read_postgres(info: ResourceInfo) -> Reading:
    admin_dsn = info.admin["dsn"]
    learner_url = info.learner.get("DATABASE_URL")
    learner_db = conninfo_to_dict(learner_url or admin_dsn).get("dbname")
    async with await psycopg.AsyncConnection.connect(
        admin_dsn, autocommit=True, connect_timeout=int(READ_TIMEOUT_S)
    ) as conn:
        names = [
            row[0]
            for row in await (
                await conn.execute(
                    "SELECT datname FROM pg_database WHERE NOT datistemplate AND datallowconn"
                    " ORDER BY datname"
                )
            ).fetchall()
        ]
    databases: dict[str, Reading] = {}
    for db in names:
        databases[db] = await _guard(
            _read_pg_database(make_conninfo(admin_dsn, dbname=db), statements=db == learner_db),
            info,
        )
    return {"learner_db": learner_db, "databases": databases}


def _read_s3_sync(info: ResourceInfo) -> Reading:
    admin = info.admin
    client = boto3.client(
        "s3",
        endpoint_url=admin["endpoint_url"],
        aws_access_key_id=admin["access_key"],
        aws_secret_access_key=admin["secret_key"],
        region_name=admin.get("region", "us-east-1"),
        config=Config(connect_timeout=3, read_timeout=READ_TIMEOUT_S, retries={"max_attempts": 1}),
    )
    objects = size = 0
    prefixes: Counter[str] = Counter()
    truncated = False
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=admin["bucket"]):
        for obj in page.get("Contents", []):
            objects += 1
            size += obj["Size"]
            prefixes[obj["Key"].split("/", 1)[0] + "/" if "/" in obj["Key"] else ""] += 1
        if objects >= MAX_S3_OBJECTS:
            truncated = True
            break
    return {"objects": objects, "bytes": size, "prefixes": dict(prefixes), "truncated": truncated}


async def _read_s3(info: ResourceInfo) -> Reading:
    return await asyncio.to_thread(_read_s3_sync, info)


def _streams_from_jsz(account: dict[str, Any]) -> dict[str, Any]:
    streams = {}
    for s in account.get("stream_detail") or []:
        state = s.get("state", {})
        streams[s["name"]] = {
            "messages": state.get("messages", 0),
            "bytes": state.get("bytes", 0),
            "last_seq": state.get("last_seq", 0),
            "consumers": {
                c["name"]: {
                    "delivered": c.get("delivered", {}).get("consumer_seq", 0),
                    "acked": c.get("ack_floor", {}).get("consumer_seq", 0),
                    "pending": c.get("num_pending", 0),
                    "redelivered": c.get("num_redelivered", 0),
                }
                for c in s.get("consumer_detail") or []
            },
        }
    return streams


_STATZ_ALL = json.dumps({"include_unused": True}).encode()  # accounts with no connection too


async def _quiet(_: Exception) -> None:
    """nats-py logs every connection error unless given a callback; failures raise anyway."""


async def _nats_connect(url: str, tls: ssl.SSLContext | None = None) -> nats.NATS:
    return await nats.connect(
        url,
        **({"tls": tls} if tls is not None else {}),
        connect_timeout=READ_TIMEOUT_S,
        allow_reconnect=False,
        max_reconnect_attempts=1,  # nats-py retries the first connect forever with 0
        reconnect_time_wait=0.1,
        error_cb=_quiet,
    )


async def _read_queue_system(url: str, tls: ssl.SSLContext | None = None) -> Reading:
    """JetStream and per-account message counts through the system account."""
    nc = await _nats_connect(url, tls)
    try:
        body = json.dumps({"accounts": True, "streams": True, "consumer": True}).encode()
        jsz = json.loads((await nc.request("$SYS.REQ.SERVER.PING.JSZ", body, READ_TIMEOUT_S)).data)
        statz = json.loads(
            (await nc.request("$SYS.REQ.ACCOUNT.PING.STATZ", _STATZ_ALL, READ_TIMEOUT_S)).data
        )
    finally:
        await nc.close()
    streams: dict[str, Any] = {}
    for account in jsz.get("data", {}).get("account_details") or []:
        streams.update(_streams_from_jsz(account))
    accounts = {
        a["acc"]: {"received": a["received"]["msgs"], "sent": a["sent"]["msgs"]}
        for a in statz.get("data", {}).get("account_statz") or []
    }
    return {"source": "system", "streams": streams, "accounts": accounts}


async def _read_queue_learner(url: str, tls: ssl.SSLContext | None = None) -> Reading:
    """JetStream stream/consumer state as the learner's own account sees it."""
    nc = await _nats_connect(url, tls)
    try:
        js = nc.jetstream(timeout=READ_TIMEOUT_S)
        streams: dict[str, Any] = {}
        for s in await js.streams_info():
            consumers = await js.consumers_info(s.config.name) if s.state.consumer_count else []
            streams[s.config.name] = {
                "messages": s.state.messages,
                "bytes": s.state.bytes,
                "last_seq": s.state.last_seq,
                "consumers": {
                    c.name: {
                        "delivered": c.delivered.consumer_seq if c.delivered else 0,
                        "acked": c.ack_floor.consumer_seq if c.ack_floor else 0,
                        "pending": c.num_pending or 0,
                        "redelivered": c.num_redelivered or 0,
                    }
                    for c in consumers
                },
            }
    finally:
        await nc.close()
    return {"source": "learner", "streams": streams, "accounts": {}}


async def _read_queue(info: ResourceInfo) -> Reading:
    try:
        return await _read_queue_system(info.admin["url"], admin_tls(info.admin))
    except Exception as exc:  # degrade to the learner's view
        fallback = info.admin.get("learner_url") or info.learner.get("NATS_URL")
        if not fallback:
            raise
        reading = await _read_queue_learner(fallback, admin_tls(info.admin))
        reading["note"] = f"system account unavailable ({type(exc).__name__}); learner view"
        return reading


_READERS: dict[Resource, Callable[[ResourceInfo], Awaitable[Reading]]] = {
    Resource.REDIS: _read_redis,
    Resource.POSTGRES: _read_postgres,
    Resource.S3: _read_s3,
    Resource.QUEUE: _read_queue,
}


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0]


def _redact(text: str, info: ResourceInfo) -> str:
    for secret in info.secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


async def _guard(
    reading: Awaitable[Reading], info: ResourceInfo, timeout_s: float = READ_TIMEOUT_S
) -> Reading:
    """Run one reading under a timeout; any failure becomes ``{"error": ...}``."""
    try:
        return await asyncio.wait_for(reading, timeout_s)
    except Exception as exc:  # a fingerprint never fails a grade
        return {"error": _redact(f"{type(exc).__name__}: {_first_line(exc)}", info)}


async def snapshot(env: Environment) -> Snapshot:
    """Read every provisioned resource's counters, concurrently."""
    kinds = [k for k in _READERS if k in env.resources]
    readings = await asyncio.gather(
        *(
            _guard(_READERS[k](env.resources[k]), env.resources[k], 4 * READ_TIMEOUT_S)
            for k in kinds
        )
    )
    return Snapshot(time.time(), {k.value: r for k, r in zip(kinds, readings, strict=True)})


# --- diffing -------------------------------------------------------------------------


def _meaningful(ops: int, requests: int) -> bool:
    return ops >= max(MIN_OPS, MIN_OPS_PER_REQUEST * requests)


def _per_request(n: int, requests: int) -> float | None:
    return round(n / requests, 3) if requests else None


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    out = {k: v - before.get(k, 0) for k, v in after.items()}
    return {k: v for k, v in sorted(out.items(), key=lambda kv: -kv[1]) if v}


def _diff_redis(before: Reading, after: Reading, requests: int) -> tuple[int, dict[str, Any]]:
    commands = {
        name: n
        for name, n in _delta(after["commands"], before["commands"]).items()
        if name.split("|", 1)[0] not in _REDIS_IGNORED
    }
    ops = sum(commands.values())
    return ops, {
        "commands": commands,
        "ops": ops,
        "ops_per_request": _per_request(ops, requests),
        "keys": after["keys"],
        "keys_delta": after["keys"] - before["keys"],
        "memory_bytes": after["memory_bytes"],
        "total_commands_delta": after["total_commands"] - before["total_commands"],
    }


_TABLE_FIELDS = ("inserts", "updates", "deletes", "seq_scans", "idx_scans")


def _diff_postgres(before: Reading, after: Reading, requests: int) -> tuple[int, dict[str, Any]]:
    learner_db = after["learner_db"]
    tables: dict[str, Any] = {}
    notes: list[str] = []
    statements: list[dict[str, Any]] = []
    for db, now in after["databases"].items():
        was = before["databases"].get(db, {})
        if "error" in now or "error" in was:
            notes.append(f"{db}: {now.get('error') or was.get('error')}")
            continue
        for name, counters in now["tables"].items():
            prev = was.get("tables", {}).get(name, {})
            change = {f: counters[f] - prev.get(f, 0) for f in _TABLE_FIELDS}
            if any(change.values()):
                tables[name if db == learner_db else f"{db}:{name}"] = {
                    **change,
                    "rows": counters["rows"],
                }
        if db == learner_db:
            if "statements_note" in now:
                notes.append(now["statements_note"])
            statements = _statement_deltas(was.get("statements", {}), now.get("statements", {}))
    writes = sum(t["inserts"] + t["updates"] + t["deletes"] for t in tables.values())
    scans = sum(t["seq_scans"] + t["idx_scans"] for t in tables.values())
    signals: dict[str, Any] = {
        "tables": tables,
        "writes": writes,
        "scans": scans,
        "writes_per_request": _per_request(writes, requests),
        "scans_per_request": _per_request(scans, requests),
    }
    if statements:
        signals["top_statements"] = statements
    if notes:
        signals["note"] = "; ".join(notes)
    return writes + scans, signals


def _statement_deltas(before: dict[str, Any], after: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for qid, now in after.items():
        prev = before.get(qid, {"calls": 0, "total_ms": 0.0})
        calls = now["calls"] - prev["calls"]
        if calls > 0:
            mean = (now["total_ms"] - prev["total_ms"]) / calls
            rows.append({"query": now["query"][:300], "calls": calls, "mean_ms": round(mean, 3)})
    return sorted(rows, key=lambda r: -r["calls"])[:TOP]


def _diff_s3(before: Reading, after: Reading, requests: int) -> tuple[int, dict[str, Any]]:
    objects = after["objects"] - before["objects"]
    size = after["bytes"] - before["bytes"]
    signals = {
        "objects": after["objects"],
        "bytes": after["bytes"],
        "objects_delta": objects,
        "bytes_delta": size,
        "prefixes": after["prefixes"],
    }
    if after["truncated"]:
        signals["note"] = f"counted the first {MAX_S3_OBJECTS} objects only"
    # S3 exposes no request counters here: any change in objects or bytes is use.
    return (MIN_OPS if objects or size else 0), signals


def _diff_queue(before: Reading, after: Reading, requests: int) -> tuple[int, dict[str, Any]]:
    streams: dict[str, Any] = {}
    published = delivered = 0
    for name, now in after["streams"].items():
        was = before["streams"].get(name, {"last_seq": 0, "consumers": {}})
        consumers = {}
        for cname, c in now["consumers"].items():
            prev = was["consumers"].get(cname, {"delivered": 0, "acked": 0})
            consumers[cname] = {
                "delivered": c["delivered"] - prev["delivered"],
                "acked": c["acked"] - prev["acked"],
                "pending": c["pending"],
                "redelivered": c["redelivered"],
            }
            delivered += consumers[cname]["delivered"]
        streams[name] = {
            "published": now["last_seq"] - was["last_seq"],
            "messages": now["messages"],
            "bytes": now["bytes"],
            "consumers": consumers,
        }
        published += streams[name]["published"]
    core = {
        acc: now["received"] - before["accounts"].get(acc, {}).get("received", 0)
        for acc, now in after["accounts"].items()
        if acc not in ("$SYS", "SYS")
    }
    core_msgs = sum(v for v in core.values() if v > 0)
    signals: dict[str, Any] = {
        "streams": streams,
        "published": published,
        "delivered": delivered,
        "published_per_request": _per_request(published, requests),
        "source": after["source"],
    }
    if after["source"] == "system":
        signals["client_messages"] = core_msgs
    if "note" in after:
        signals["note"] = after["note"]
    return max(published + delivered, core_msgs), signals


_DIFFS = {
    Resource.REDIS.value: _diff_redis,
    Resource.POSTGRES.value: _diff_postgres,
    Resource.S3.value: _diff_s3,
    Resource.QUEUE.value: _diff_queue,
}


def diff(before: Snapshot, after: Snapshot, requests: int) -> Fingerprint:
    """What changed between two snapshots, per resource, and which resources were used."""
    used: list[str] = []
    signals: dict[str, Any] = {}
    for name, now in after.readings.items():
        was = before.readings.get(name)
        if was is None or "error" in was or "error" in now:
            problem = (was or {}).get("error") or now.get("error") or "no reading before load"
            signals[name] = {"note": f"could not read: {problem}"}
            continue
        try:
            ops, signals[name] = _DIFFS[name](was, now, requests)
        except (KeyError, TypeError, ValueError) as exc:
            signals[name] = {"note": f"could not compare readings: {type(exc).__name__}: {exc}"}
            continue
        if _meaningful(ops, requests):
            used.append(name)
    return Fingerprint(used, signals)
