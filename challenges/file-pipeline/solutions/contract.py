"""The file-pipeline HTTP contract and CSV rules, shared by this challenge's reference designs.

* ``POST /v1/uploads`` with a raw CSV body (at most :data:`MAX_UPLOAD` bytes) →
  ``202 {"id": "...", "status": "..."}``; ``413`` when larger; ``503`` when a store
  cannot take it (nothing was accepted).
* ``GET /v1/uploads/{id}`` → ``200 {"id", "status": "pending|processing|done|failed",
  "result": {"rows", "sha256", "amount_total"} | null, "error": "..." | null}``;
  ``404`` for an unknown id.

A CSV is well-formed when it is UTF-8 (a leading byte order mark is not part of
the first column's name: https://www.rfc-editor.org/rfc/rfc3629#section-6), its
first record is a header with an ``amount`` column, every further record has as many fields as the header (empty
lines are ignored) and every amount is a decimal number (``-12.50``, ``3``). The
result counts the records after the header, hashes the upload's bytes, and sums the
amounts exactly (decimal arithmetic, never floats).

A design supplies :class:`Uploads` (how an upload is accepted and looked up); the
routes, parsing and JSON live here.
"""

from __future__ import annotations

import csv
import decimal
import hashlib
import io
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from challenges.service import StoreUnavailable, json_error, warn_throttled

MAX_UPLOAD = 20 * 1024 * 1024
AMOUNT = re.compile(r"-?[0-9]+(\.[0-9]+)?")


class Malformed(ValueError):
    """The upload is not a well-formed CSV; the message is the reason the learner sees."""


@dataclass(frozen=True)
class Result:
    rows: int
    sha256: str
    amount_total: str

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "sha256": self.sha256, "amount_total": self.amount_total}


@dataclass(frozen=True)
class Upload:
    """One upload as the API shows it."""

    id: str
    status: str
    result: Result | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "result": None if self.result is None else self.result.to_dict(),
            "error": self.error,
        }


def process(data: bytes) -> Result:
    """Parse ``data`` and compute its result; raises :class:`Malformed`. CPU-bound."""
    try:
        text = data.decode("utf-8-sig")  # a leading BOM is not part of the first name
    except UnicodeDecodeError as exc:
        raise Malformed(f"not UTF-8 (byte {exc.start})") from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            raise Malformed("empty upload: no header")
        if "amount" not in header:
            raise Malformed("the header has no 'amount' column")
        column, width = header.index("amount"), len(header)
        rows = 0
        with decimal.localcontext() as ctx:
            ctx.prec = 60  # exact for any sum that fits in 20 MB
            total = decimal.Decimal(0)
            for record in reader:
                if not record:
                    continue
                rows += 1
                if len(record) != width:
                    raise Malformed(
                        f"line {reader.line_num}: {len(record)} fields, the header has {width}"
                    )
                amount = record[column]
                if not AMOUNT.fullmatch(amount):
                    raise Malformed(
                        f"line {reader.line_num}: amount {amount[:40]!r} is not a decimal"
                    )
                total += decimal.Decimal(amount)
    except csv.Error as exc:
        raise Malformed(f"line {reader.line_num}: {exc}") from None
    return Result(rows, hashlib.sha256(data).hexdigest(), str(total))


def new_id() -> str:
    return uuid.uuid4().hex


class Uploads(Protocol):
    async def accept(self, data: bytes) -> Upload:
        """Take an upload; raise StoreUnavailable (or OSError) when it cannot be kept."""
        ...

    async def get(self, upload_id: str) -> Upload | None: ...


def build_app(uploads: Uploads) -> web.Application:
    app = web.Application(client_max_size=MAX_UPLOAD)

    async def post(request: web.Request) -> web.Response:
        try:
            data = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return json_error(413, f"an upload is at most {MAX_UPLOAD} bytes")
        try:
            upload = await uploads.accept(data)
        except (StoreUnavailable, OSError) as exc:
            warn_throttled("accept", f"upload refused: {type(exc).__name__}: {exc}")
            return json_error(503, "storage unavailable, nothing was accepted; retry")
        return web.json_response({"id": upload.id, "status": upload.status}, status=202)

    async def get(request: web.Request) -> web.Response:
        try:
            upload = await uploads.get(request.match_info["id"])
        except (StoreUnavailable, OSError) as exc:
            warn_throttled("get", f"lookup failed: {type(exc).__name__}: {exc}")
            return json_error(503, "store unavailable")
        if upload is None:
            return json_error(404, "no such upload")
        return web.json_response(upload.to_dict())

    app.router.add_post("/v1/uploads", post)
    app.router.add_get("/v1/uploads/{id}", get)
    return app


def row_to_upload(row: Mapping[str, Any]) -> Upload:
    result = None
    if row["status"] == "done":
        result = Result(row["rows"], row["sha256"], row["amount_total"])
    return Upload(row["id"], row["status"], result, row["error"])
