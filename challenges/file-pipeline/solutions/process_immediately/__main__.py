"""File pipeline, reference design "process_immediately": parse in the request, answer done.

Stores: S3 (the originals) and PostgreSQL (the results); ``NATS_URL`` is ignored.

``POST /v1/uploads`` reads the body, parses it in a worker thread (the CSV rules
are in ``contract``), stores the original in S3, then inserts the row already
``done`` (or ``failed`` with its reason) and answers ``202``. The order matters:
the row is written only once the original is safe, so a ``done`` upload always
has its original; if S3 or PostgreSQL refuses, the answer is ``503`` and nothing
was accepted — the client still holds the file and retries.

What it buys: one moving part fewer (no queue, no worker, no retry logic), and
the result is ready the moment the upload is acknowledged: ``pending`` and
``processing`` are never seen.

The price:

* The request holds for the whole job: receiving, parsing (seconds of CPU for a
  20 MB file), storing. Large uploads make the acknowledgement slow and occupy
  the service's CPU, so small uploads queued behind them wait too.
* The work lives only in the request. If the process dies mid-way, nothing
  records that the upload ever arrived: the client sees a broken connection and
  must retry (at least it was never told "accepted"). A job that took minutes
  instead of milliseconds could not be retried piecemeal or resumed.
* It cannot absorb a burst: every upload is processed at the rate it arrives,
  where a queue would let acceptance run ahead of processing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from aiohttp import web

from challenges.service import add_health_check, run

from .. import contract
from ..stores import Bucket, Table, outcome

NAME = "file-pipeline/process_immediately"
PARSERS = 2  # uploads parsed at once; more would only share the same CPU


class ProcessImmediately:
    process = staticmethod(contract.process)  # bytes -> Result; raises contract.Malformed

    def __init__(self, table: Table, bucket: Bucket) -> None:
        self.table = table
        self.bucket = bucket
        self.parsing = asyncio.Semaphore(PARSERS)

    async def accept(self, data: bytes) -> contract.Upload:
        upload_id = contract.new_id()
        async with self.parsing:
            try:
                result, error = await asyncio.to_thread(self.process, data), None
            except contract.Malformed as exc:
                result, error = None, str(exc)
        await self.bucket.put(upload_id, data)  # the original first…
        columns = outcome(result, error)
        await self.table.insert(upload_id, len(data), columns)  # …then the verdict
        return contract.Upload(upload_id, columns[0], result, error)

    async def get(self, upload_id: str) -> contract.Upload | None:
        return await self.table.get(upload_id)


def build(env: Mapping[str, str], design: type = ProcessImmediately) -> web.Application:
    """The service around ``design`` (a class taking the table and the bucket)."""
    table, bucket = Table(env["DATABASE_URL"]), Bucket(env)
    app = contract.build_app(design(table, bucket))
    add_health_check(app, "postgres", table.health)
    app.cleanup_ctx.append(table.lifecycle)
    return app


def main() -> None:
    run(NAME, build, required_env=["DATABASE_URL", "S3_ENDPOINT_URL", "S3_BUCKET"])


if __name__ == "__main__":
    main()
