"""Background jobs, reference design "redis_streams": a Redis stream and a consumer group.

Store: Redis only (``REDIS_URL``). ``POST /v1/jobs`` runs one Lua script, atomic in Redis:
the client's key maps to its job (``SET … EX 86400``: a retry within a day finds the first job,
or gets ``422`` for another input); a new job's hash is written and its id appended to the
stream ``rs:jobs`` with ``XADD``. The answer leaves once Redis has it: well under a
millisecond of work, whatever the render costs.

Workers (``worker.py``, two processes of four slots each) read the stream in the consumer group
``workers`` (``XREADGROUP``): each entry goes to one consumer and stays *pending* until that
consumer ``XACK``s it, after the render is stored. An entry whose consumer died stays pending;
a slot that finds it idle for three seconds takes it over with ``XAUTOCLAIM`` and runs it again
— at-least-once, so the render uses the job's id as the rendering service's key, which replays
the first render instead of billing a second.

The price: Redis is the only copy of the jobs (persistence is Redis's: a restart without its
data loses the queue), and the pending list must be watched for entries nobody acks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from aiohttp import web
from redis.exceptions import RedisError

from challenges.service import add_health_check, run, warn_throttled

from .. import contract
from . import stream

NAME = "background-jobs/redis_streams"
# KEYS: the key's mapping; ARGV: a new job id, the input, the TTL, the stream, the job prefix.
# Returns the job id and the input of the first job with this key.
SUBMIT = """
local first = redis.call('GET', KEYS[1])
if first then
  return {first, redis.call('HGET', ARGV[5] .. first, 'input') or ''}
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
redis.call('HSET', ARGV[5] .. ARGV[1], 'status', 'queued', 'input', ARGV[2])
redis.call('XADD', ARGV[4], '*', 'id', ARGV[1])
return {ARGV[1], ARGV[2]}
"""


class StreamQueue:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.redis = stream.client(env)
        self.submit_script = self.redis.register_script(SUBMIT)

    async def submit(self, s: contract.Submitted) -> dict[str, Any]:
        try:
            job_id, first_input = await self.submit_script(
                keys=[f"rs:key:{s.key}"],
                args=[contract.new_job_id(), s.input, stream.IDEMPOTENCY_TTL_S, stream.STREAM,
                      stream.job_key("")],
            )  # fmt: skip
            if first_input != s.input:
                raise contract.Refused(422, "this Idempotency-Key was used with another input")
            found = await self.read(job_id)
        except RedisError as exc:
            warn_throttled("submit", f"redis unavailable: {type(exc).__name__}")
            raise contract.Refused(503, "redis unavailable; retry with the same key") from None
        return found or contract.job(job_id, "queued")

    async def read(self, job_id: str) -> dict[str, Any] | None:
        try:
            status, result = await self.redis.hmget(stream.job_key(job_id), "status", "result")
        except RedisError:
            raise contract.Refused(503, "redis unavailable") from None
        return None if status is None else contract.job(job_id, status, result)

    async def health(self) -> None:
        await self.redis.ping()


def build(env: Mapping[str, str]) -> web.Application:
    queue = StreamQueue(env)
    app = contract.build_app(queue.submit, queue.read)
    add_health_check(app, "redis", queue.health)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        yield
        await queue.redis.aclose()

    app.cleanup_ctx.append(lifecycle)
    return app


if __name__ == "__main__":
    run(NAME, build, required_env=["REDIS_URL"])
