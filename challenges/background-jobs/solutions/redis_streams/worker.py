"""The redis_streams design's worker process: slots that take over stale pending entries
(``XAUTOCLAIM``) or read new ones (``XREADGROUP``), render with the job's id as the rendering
service's key, store the result, then ``XACK``."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Mapping

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from challenges.service import warn_throttled

from .. import contract
from . import stream

SLOTS = 4  # jobs one worker process renders at once
STALE_MS = 3000  # a pending entry idle this long lost its consumer: take it over
BLOCK_MS = 200  # a slot waits this long for a new entry


async def ensure_group(r: aioredis.Redis) -> None:
    try:
        await r.xgroup_create(stream.STREAM, stream.GROUP, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


async def take(r: aioredis.Redis, me: str) -> tuple[str, str] | None:
    """(entry id, job id): a stale pending entry first, else a new one; None when idle."""
    _, stale, *_ = await r.xautoclaim(stream.STREAM, stream.GROUP, me, STALE_MS, "0-0", count=1)
    if not stale:
        read = await r.xreadgroup(stream.GROUP, me, {stream.STREAM: ">"}, count=1, block=BLOCK_MS)
        stale = read[0][1] if read else []
    if not stale:
        return None
    entry, fields = stale[0]
    return entry, fields["id"]


async def slot(r: aioredis.Redis, renderer: contract.Renderer, me: str) -> None:
    while True:
        try:
            taken = await take(r, me)
            if taken is None:
                continue
            entry, job_id = taken
            key = stream.job_key(job_id)
            status, text = await r.hmget(key, "status", "input")
            if status != "done" and text is not None:
                await r.hset(key, "status", "running")
                result = await renderer.render(text, key=job_id)
                await r.hset(key, mapping={"status": "done", "result": result})
            await r.xack(stream.STREAM, stream.GROUP, entry)
        except (RedisError, RuntimeError) as exc:  # still pending: claimed again when stale
            warn_throttled("worker", f"a job is left for later: {exc}")
            await asyncio.sleep(0.1)


async def work(env: Mapping[str, str]) -> None:
    r = stream.client(env)
    me = f"worker-{os.getpid()}-{secrets.token_hex(3)}"  # a restarted worker is a new consumer
    try:
        while True:
            try:
                await ensure_group(r)
                break
            except RedisError as exc:
                warn_throttled("group", f"cannot create the group yet: {exc}")
                await asyncio.sleep(0.2)
        async with contract.Renderer(env) as renderer:
            await asyncio.gather(*(slot(r, renderer, f"{me}-{i}") for i in range(SLOTS)))
    finally:
        await r.aclose()


if __name__ == "__main__":
    contract.run_worker("redis_streams", work)
