"""Grades a file pipeline: the contract, a stream of CSV uploads of mixed sizes while S3 crashes
and the queue dies, then every accepted upload against its result and its stored original.

The files cover the contract's whole domain, seeded: sizes from a kilobyte to 12 MB under
load and one close to the 20 MB limit in the contract; RFC 4180 quirks
(https://www.rfc-editor.org/rfc/rfc4180#section-2) — CRLF or LF, quoted fields holding
commas, doubled quotes and line breaks, no final line break — plus empty lines, a UTF-8
byte order mark (https://www.rfc-editor.org/rfc/rfc3629#section-6), the amount column in
different places, amounts with up to 20 decimals or 20 integer digits. An upload refused
with 5xx or unanswered is resent after the load, as a client would; one refused for good
(or with a 4xx) counts as lost."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import math
import secrets
import time
from collections.abc import Iterable
from csv import reader as csv_reader
from csv import writer as csv_writer
from decimal import Decimal, localcontext
from typing import Any, NamedTuple

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from challenges.schema import ChallengeSpec
from grading import json_object, percentile, poll_until
from grading.http import Exchange
from grading.load import LoadPlan, LoadResult, Request, Response
from grading.nemesis import FaultWindow
from grading.report import Status
from grading.scenario import Grade
from grading.standard import StandardScenario
from provisioning import Resource

HEADER = b"id,customer,amount,note\n"  # the contract's malformed samples
# Field orders an upload's header may take: the amount column is not always in one place,
# and when it comes first a UTF-8 BOM sits right before its name.
ORDERS = (("id", "customer", "amount", "note"), ("amount", "id", "note", "customer"))
# Notes: RFC 4180 quoting (https://www.rfc-editor.org/rfc/rfc4180#section-2): commas,
# doubled quotes and line breaks (LF, CRLF, an empty line) inside quotes, non-ASCII text.
NOTES = (
    b"",
    b"paid",
    b"late",
    b'"net 30, paid"',
    b'"see ""ticket 7"""',
    b'"line one\nline two"',
    b'"two\r\nlines, CRLF"',
    b'"an empty line\n\ninside quotes"',
    '"ünïcödé €, ok"'.encode(),
    b'""',
)
NOTE_WEIGHTS = (30, 20, 10, 8, 6, 8, 5, 5, 5, 3)
COMPANIES = (
    "Acme Widgets International",
    "Globex Corporation Ltd",
    "Initech Software Services",
    "Umbrella Pharmaceuticals GmbH",
    "Hooli Cloud Storage Inc",
    "Stark Industrial Supplies",
)
BOM = b"\xef\xbb\xbf"  # a UTF-8 byte order mark, as spreadsheet exports write one
BLOCKS = 48  # pre-generated blocks of rows that uploads are assembled from
BLOCK_ROWS = 300
BLANK_LINE_SHARE = 0.01  # records followed by an empty line (ignored by the contract)
MiB = 1024 * 1024
MAX_UPLOAD = 20_000_000  # "up to 20 MB": under 20 MB and 20 MiB alike
LARGE_CONTRACT_BYTES = 19_800_000  # the contract's large upload: close to the limit
SIZES = ((0.70, 1_000, 40_000), (0.22, 100_000, 600_000), (0.08, 1_000_000, 3_000_000))
# Each load run's second upload is this large: early, so that its seconds of parsing are
# over before the run's last fault heals and the service's recovery is measured.
BIG = (4_000_000, 12_000_000)
MAX_TOTAL_BYTES = 56_000_000  # all uploads of the load together
MALFORMED_EVERY = 12  # about one upload in 12 is malformed on purpose
CONTRACT_WAIT_S = 20.0
DRAIN_S = 25.0  # after the load, how long accepted uploads may take to finish
RESEND_BUDGET_S = 15.0  # after the load, how long refused uploads are resent
POLL_EVERY_S = 0.25
POLL_CONCURRENCY = 8
DONE_P95_LIMIT_S = 10.0
UPLOAD_TIMEOUT_S = 20.0
TERMINAL = ("done", "failed")
STATUSES = ("pending", "processing", "done", "failed")


class Csv(NamedTuple):
    """An upload and what a correct pipeline must answer for it."""

    body: bytes
    rows: int
    amount_total: Decimal
    malformed: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.body).hexdigest()

    @property
    def total_text(self) -> str:
        return format(self.amount_total, "f")


class Tracked:
    """An accepted upload, followed until it finishes."""

    def __init__(self, upload_id: str, csv: Csv, sent_at: float) -> None:
        self.id = upload_id
        self.csv = csv
        self.sent_at = sent_at  # monotonic: when its POST was scheduled
        self.status: str | None = None
        self.data: dict[str, Any] = {}
        self.finished_at: float | None = None
        self.seen_unfinished = False
        self.stored: bool | None = None  # original in S3, byte for byte


def exact_sum(amounts: Iterable[Decimal]) -> Decimal:
    """The exact sum: enough digits that no addition of this grader's amounts rounds."""
    with localcontext() as ctx:
        ctx.prec = 200
        return sum(amounts, Decimal(0))


class Generator:
    """Seeded CSVs from the contract's whole domain, assembled from pre-made blocks of rows.

    Per upload: a UTF-8 BOM or not, LF or CRLF line ends, the amount column first or third,
    a final line break or not, empty lines between records. Per row: amounts in cents, with
    up to 20 decimals, up to 20 integer digits, negative, quoted, integral; notes quoted per
    RFC 4180 with commas, doubled quotes and line breaks inside. Blocks are rendered once
    per (order, line end), so a 20 MB upload costs a join, not a loop over its rows.
    """

    def __init__(self, rng: Any, nonce: str) -> None:
        self.rng = rng
        self.nonce = nonce
        self.count = 0
        self.blocks = [self.block(b) for b in range(BLOCKS)]
        self.rendered: dict[tuple[int, bytes], list[bytes]] = {}

    def amount(self) -> tuple[bytes, Decimal]:
        """An amount field and its value."""
        pick = self.rng.random()
        if pick < 0.85:
            value = Decimal(self.rng.randint(-50_000, 2_000_000)).scaleb(-2)
        elif pick < 0.90:  # many decimals
            value = Decimal(self.rng.randint(-(10**20), 10**20)).scaleb(-self.rng.randint(7, 20))
        elif pick < 0.95:  # very large
            value = Decimal(self.rng.randint(10**15, 10**20)).scaleb(-2)
            value = -value if self.rng.random() < 0.3 else value
        else:  # integral
            value = Decimal(self.rng.randint(-999, 99_999))
        text = format(value, "f").encode()
        if self.rng.random() < 0.04:
            text = b'"' + text + b'"'  # a quoted amount is still a decimal
        return text, value

    def fields(self, key: str) -> tuple[dict[str, bytes], Decimal]:
        amount, value = self.amount()
        note = self.rng.choices(NOTES, NOTE_WEIGHTS)[0]
        customer = f"{self.rng.choice(COMPANIES)} {self.rng.randrange(1000)}".encode()
        return {"id": key.encode(), "customer": customer, "amount": amount, "note": note}, value

    def block(self, b: int) -> tuple[list[tuple[dict[str, bytes], bool]], Decimal]:
        rows, values = [], []
        for i in range(BLOCK_ROWS):
            fields, value = self.fields(f"r{b}-{i}")
            rows.append((fields, self.rng.random() < BLANK_LINE_SHARE))
            values.append(value)
        return rows, exact_sum(values)

    def render(self, b: int, order: int, eol: bytes) -> bytes:
        key = (order, eol)
        if key not in self.rendered:
            self.rendered[key] = [
                b"".join(
                    _line(fields, ORDERS[order], eol) + (eol if blank else b"")
                    for fields, blank in rows
                )
                for rows, _ in self.blocks
            ]
        return self.rendered[key][b]

    def csv(self, size: int, *, malformed: bool = False) -> Csv:
        """At most about ``size`` bytes; the first row is unique to this grade and upload."""
        self.count += 1
        order = self.rng.randrange(len(ORDERS))
        eol = b"\r\n" if self.rng.random() < 0.5 else b"\n"
        bom = BOM if self.rng.random() < 0.3 else b""
        final_eol = self.rng.random() < 0.8
        first, first_value = self.fields(f"u-{self.nonce}-{self.count}")
        parts = [bom + b",".join(n.encode() for n in ORDERS[order]) + eol]
        if self.rng.random() < 0.2:
            parts.append(eol)  # an empty line before the first record
        parts.append(_line(first, ORDERS[order], eol))
        values, rows = [first_value], 1
        length = sum(map(len, parts)) + 100  # room for a malformed line
        while True:
            b = self.rng.randrange(BLOCKS)
            block = self.render(b, order, eol)
            if length + len(block) > size:
                break
            parts.append(block)
            length += len(block)
            values.append(self.blocks[b][1])
            rows += BLOCK_ROWS
        if malformed:
            bad = dict(first)
            kind = self.rng.randrange(3)
            if kind == 0:
                bad_line = _line(bad, ORDERS[order], eol)[: -len(eol)] + b",extra field" + eol
            else:
                bad["amount"] = (b"12.5.1", b'"1,5"')[kind - 1]
                bad_line = _line(bad, ORDERS[order], eol)
            parts.insert(self.rng.randrange(2, len(parts) + 1), bad_line)
        body = b"".join(parts)
        if not final_eol and body.endswith(eol) and not body.endswith(eol + eol):
            body = body[: -len(eol)]  # RFC 4180: the last record may end without a line break
        return Csv(body, rows, exact_sum(values), malformed)

    def size(self) -> int:
        pick = self.rng.random()
        for share, lo, hi in SIZES:
            if pick < share:
                return self.rng.randint(lo, hi)
            pick -= share
        return SIZES[-1][2]


def _line(fields: dict[str, bytes], order: tuple[str, ...], eol: bytes) -> bytes:
    return b",".join(fields[name] for name in order) + eol


def upload_id_of(body: bytes) -> str | None:
    data = json_object(body)
    upload_id = data.get("id") if data is not None else None
    return upload_id if isinstance(upload_id, str) and upload_id else None


def result_problems(csv: Csv, data: dict[str, Any]) -> list[str]:
    """What is wrong with a finished upload's answer (empty when it is right)."""
    status = data.get("status")
    if csv.malformed:
        if status != "failed":
            return [f"a malformed CSV ended {status!r}, expected 'failed'"]
        if not isinstance(data.get("error"), str) or not data["error"].strip():
            return ["failed without an error reason"]
        return []
    if status != "done":
        return [f"a well-formed CSV ended {status!r} ({data.get('error')!r}), expected 'done'"]
    result = data.get("result")
    if not isinstance(result, dict):
        return ["done without a result object"]
    problems = []
    if result.get("rows") != csv.rows or isinstance(result.get("rows"), bool):
        problems.append(f"rows {result.get('rows')!r}, expected {csv.rows}")
    if result.get("sha256") != csv.sha256:
        problems.append(f"sha256 {str(result.get('sha256'))[:16]}…, expected {csv.sha256[:16]}…")
    total = result.get("amount_total")
    try:
        ok = isinstance(total, str) and Decimal(total) == csv.amount_total
    except ArithmeticError:
        ok = False
    if not ok:
        problems.append(f"amount_total {total!r}, expected {csv.total_text!r} (a string)")
    return problems


class Originals:
    """Reads originals from the learner's bucket with the grader's admin identity."""

    def __init__(self, admin: dict[str, str]) -> None:
        self.bucket = admin["bucket"]
        self.client = boto3.client(
            "s3",
            endpoint_url=admin["endpoint_url"],
            aws_access_key_id=admin["access_key"],
            aws_secret_access_key=admin["secret_key"],
            region_name="us-east-1",
            config=Config(
                connect_timeout=3,
                read_timeout=20,
                retries={"max_attempts": 3, "mode": "standard"},
                s3={"addressing_style": "path"},
            ),
        )

    def _sha256(self, upload_id: str) -> str | None:
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=f"uploads/{upload_id}")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise
        digest = hashlib.sha256()
        with contextlib.closing(obj["Body"]) as body:
            for chunk in iter(lambda: body.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()

    async def sha256(self, upload_id: str) -> str | None:
        """The stored original's sha256, or None when there is no such object."""
        return await asyncio.to_thread(self._sha256, upload_id)


class FilePipelineScenario(StandardScenario):
    checks = (
        "contract.healthz",
        "contract.accept",
        "contract.status",
        "contract.result",
        "contract.stored",
        "contract.large",
        "contract.malformed",
        "contract.unknown",
        "pipeline.durable",
        "pipeline.correct",
        "pipeline.latency",
        "load.latency",
        "load.errors",
        "faults.recovery",
        "faults.availability",
    )
    unit = "uploads"
    availability_title = "Keeps accepting uploads while a store is down"
    availability_penalty = 4.0

    def __init__(self, spec: ChallengeSpec) -> None:
        super().__init__(spec)
        self.nonce = secrets.token_hex(3)  # fresh rows on every run; never affects the verdict
        self.tracked: dict[str, Tracked] = {}
        self.unavailable: list[Csv] = []  # uploads refused with 5xx or no answer
        self.refused: list[tuple[Csv, str]] = []  # valid or not, refused for good: lost
        self.segments: dict[str, list[Csv]] = {}  # each load segment's uploads

    def originals(self, g: Grade) -> Originals | None:
        return Originals(g.env.admin(Resource.S3)) if g.env is not None else None

    # -- contract -------------------------------------------------------------------------
    async def upload(self, g: Grade, body: bytes) -> tuple[Exchange, str | None]:
        ex = await g.request(
            "POST",
            "/v1/uploads",
            body=body,
            headers={"Content-Type": "text/csv"},
            timeout_s=UPLOAD_TIMEOUT_S,
        )
        return ex, upload_id_of(ex.body) if ex.status == 202 else None

    async def wait_finished(
        self, g: Grade, upload_id: str
    ) -> tuple[Exchange | None, dict[str, Any], list[str]]:
        """Poll until the upload is done or failed; (last exchange, its JSON, statuses seen)."""
        seen: list[str] = []
        data: dict[str, Any] = {}

        async def probe() -> Exchange:
            ex = await g.request("GET", f"/v1/uploads/{upload_id}")
            got = json_object(ex)
            if got is not None:
                data.clear()
                data.update(got)
                status = str(got.get("status"))
                if not seen or seen[-1] != status:
                    seen.append(status)
            return ex

        ex, _ = await poll_until(
            probe, lambda _: data.get("status") in TERMINAL, limit_s=CONTRACT_WAIT_S, every_s=0.1
        )
        return ex, data, seen

    async def cases(self, g: Grade) -> None:
        gen = Generator(g.rng, self.nonce)
        sample = self.sample_csv(gen)
        ex, upload_id = await self.upload(g, sample.body)
        g.check(
            "contract.accept",
            "POST /v1/uploads answers 202 with an id",
            upload_id is not None,
            exchange=ex,
            expected='202 {"id": "..."}',
            actual=f"{ex.status} {ex.text(200)}",
        )
        g.progress(0.15)
        if upload_id is None:
            for check_id in ("contract.status", "contract.result", "contract.stored"):
                g.check(check_id, "Needs an accepted upload", Status.FAIL, detail="none accepted")
        else:
            await self.follow(g, upload_id, sample)
        g.progress(0.4)
        await self.large(g, gen)
        g.progress(0.6)
        await self.malformed(g, gen)
        ex = await g.request("GET", f"/v1/uploads/unknown-{secrets.token_hex(6)}")
        g.check(
            "contract.unknown",
            "GET of an unknown id answers 404",
            ex.status == 404,
            exchange=ex,
            expected=404,
            actual=ex.status,
        )

    def sample_csv(self, gen: Generator) -> Csv:
        """A small CSV with the format's quirks: a BOM before the amount column's name, CRLF,
        quoting with commas, doubled quotes and line breaks inside, empty lines, a quoted
        amount, 20 decimals and 20 integer digits; then generated rows in another order."""
        lines = [
            BOM + b"amount,customer,id,note\r\n",
            b'12.50,"Acme, Inc.",c1,"first ""big"" order"\r\n',
            b"\r\n",
            b'-3,Globex,c2,"line one\nline two"\r\n',
            b'"1000.125",Initech,c3,"refund\r\n\r\nsee above"\r\n',
            b"0.00000000000000000001,Umbrella,c4,\r\n",
            b"98765432109876543210.99,Hooli,c5,big\r\n",
            b"-0.99999999999999999999,Hooli,c6,\r\n",
            b"\r\n",
        ]
        amounts = (
            "12.50",
            "-3",
            "1000.125",
            "0.00000000000000000001",
            "98765432109876543210.99",
            "-0.99999999999999999999",
        )
        total = exact_sum(Decimal(a) for a in amounts)
        extra = gen.csv(3_000)
        records = csv_reader(io.StringIO(extra.body.decode("utf-8-sig"), newline=""))
        header = next(records)
        columns = [header.index(name) for name in ("amount", "customer", "id", "note")]
        out = io.StringIO(newline="")
        csv_writer(out, lineterminator="\r\n").writerows(
            [r[i] for i in columns] for r in records if r
        )
        body = b"".join(lines) + out.getvalue().encode()
        return Csv(body, len(amounts) + extra.rows, exact_sum((total, extra.amount_total)), False)

    async def follow(self, g: Grade, upload_id: str, csv: Csv) -> None:
        first = await g.request("GET", f"/v1/uploads/{upload_id}")
        data = json_object(first)
        ok = (
            first.status == 200
            and isinstance(data, dict)
            and data.get("id") == upload_id
            and data.get("status") in STATUSES
        )
        ex, final, seen = await self.wait_finished(g, upload_id)
        ok = ok and bool(seen) and all(s in STATUSES for s in seen)
        ok = ok and [STATUSES.index(s) for s in seen] == sorted(STATUSES.index(s) for s in seen)
        g.check(
            "contract.status",
            "GET /v1/uploads/{id} shows the upload moving pending → processing → done",
            ok and final.get("status") in TERMINAL,
            detail="statuses seen: " + " → ".join(seen),
            exchange=first,
            expected="200 with its id and a status that only moves forward, ending done",
            actual=f"{first.status} {first.text(200)}",
        )
        problems = result_problems(csv, final) if final.get("status") in TERMINAL else []
        if final.get("status") not in TERMINAL:
            problems = [f"not finished after {CONTRACT_WAIT_S:g} s"]
        g.check(
            "contract.result",
            "The result holds the row count, the upload's sha256 and the exact amount total",
            not problems,
            detail="; ".join(problems),
            exchange=ex,
            expected={
                "rows": csv.rows,
                "sha256": csv.sha256,
                "amount_total": csv.total_text,
            },
            actual=final.get("result"),
        )
        await self.stored(g, upload_id, csv)

    async def stored(self, g: Grade, upload_id: str, csv: Csv) -> None:
        originals = self.originals(g)
        if originals is None:
            g.check(
                "contract.stored",
                "The original is in S3_BUCKET under uploads/{id}, byte for byte",
                Status.SKIP,
                detail="graded without an environment: the bucket cannot be read",
            )
            return
        got: str | None = None
        for _ in range(20):  # a done upload's original may take a moment to be visible
            try:
                got = await originals.sha256(upload_id)
            except (BotoCoreError, ClientError) as exc:
                got = f"unreadable: {exc}"
            if got == csv.sha256:
                break
            await asyncio.sleep(0.1)
        g.check(
            "contract.stored",
            "The original is in S3_BUCKET under uploads/{id}, byte for byte",
            got == csv.sha256,
            detail=f"s3://<S3_BUCKET>/uploads/{upload_id}",
            expected=f"sha256 {csv.sha256}",
            actual="no such object" if got is None else f"sha256 {got}",
        )

    async def large(self, g: Grade, gen: Generator) -> None:
        csv = gen.csv(LARGE_CONTRACT_BYTES)
        g.metric("contract.large_bytes", len(csv.body))
        ex, upload_id = await self.upload(g, csv.body)
        problems = [] if upload_id else [f"POST answered {ex.status} {ex.text(120)}"]
        if upload_id:
            _, final, _ = await self.wait_finished(g, upload_id)
            if final.get("status") in TERMINAL:
                problems = result_problems(csv, final)
            else:
                problems = [f"not finished after {CONTRACT_WAIT_S:g} s"]
        g.check(
            "contract.large",
            f"A {len(csv.body) / 1e6:.1f} MB upload (the limit is 20 MB) is accepted and processed",
            not problems,
            detail="; ".join(problems),  # no exchange: its curl line would carry 20 MB
            expected="202, then done with the right result",
        )

    async def malformed(self, g: Grade, gen: Generator) -> None:
        cases = [
            ("a row with an extra field", HEADER + b"a,b,1.00,n\nc,d,2.00,n,extra\n"),
            ("an amount that is not a decimal", HEADER + b"a,b,1.00,n\nc,d,12.5.1,n\n"),
            ("no amount column", b"id,customer,total\na,b,1.00\n"),
        ]
        failures: list[tuple[str, str, Exchange | None]] = []
        for label, body in cases:
            ex, upload_id = await self.upload(g, body)
            if upload_id is None:
                failures.append((label, f"POST answered {ex.status}, expected 202", ex))
                continue
            last, final, _ = await self.wait_finished(g, upload_id)
            problems = result_problems(Csv(body, 0, Decimal(0), True), final)
            if final.get("status") not in TERMINAL:
                problems = [f"not finished after {CONTRACT_WAIT_S:g} s"]
            if problems:
                failures.append((label, problems[0], last))
        g.check(
            "contract.malformed",
            "A malformed CSV is accepted, then ends failed with a reason",
            not failures,
            detail="; ".join(f"{label}: {why}" for label, why, _ in failures),
            exchange=failures[0][2] if failures else None,
            partial=1 - len(failures) / len(cases),
        )

    # -- load -----------------------------------------------------------------------------
    def uploads(self, g: Grade, gen: Generator, count: int, budget: int) -> list[Csv]:
        """``count`` uploads of mixed sizes within ``budget`` bytes, one of them 4..12 MB."""
        sizes = [gen.size() for _ in range(count)]
        if count > 1:
            sizes[1] = g.rng.randint(*BIG)
        scale = min(1.0, budget / max(1, sum(sizes)))
        return [
            gen.csv(int(s * scale), malformed=(i % MALFORMED_EVERY == MALFORMED_EVERY // 2))
            for i, s in enumerate(sizes)
        ]

    def traffic(self, g: Grade, segment: str, duration_s: float) -> LoadPlan:
        """The uploads made for ``segment`` by :meth:`load`, at the graded rate."""
        csvs = self.segments[segment]
        headers = (("Content-Type", "text/csv"),)

        def make(i: int) -> Request:
            return Request("POST", "/v1/uploads", csvs[i].body, headers)

        def classify(_req: Request, resp: Response) -> str | None:
            if resp.status != 202:
                return f"http_{resp.status}"
            return None if upload_id_of(resp.body) else "no_id"

        def on_result(
            i: int,
            _req: Request,
            resp: Response | None,
            kind: str | None,
            sched_s: float,
            done_s: float,
        ) -> None:
            upload_id = upload_id_of(resp.body) if resp is not None and kind is None else None
            if upload_id is not None:
                sent_at = time.monotonic() - (done_s - sched_s)
                self.tracked[upload_id] = Tracked(upload_id, csvs[i], sent_at)
            elif resp is None or resp.status >= 500:
                self.unavailable.append(csvs[i])  # resent after the load, as a client would
            else:  # refused what the contract says to accept: a client would not retry
                self.refused.append((csvs[i], f"{resp.status} {resp.body[:120]!r}"))

        return LoadPlan(
            rate=self.spec.grading.rate,
            duration_s=duration_s,
            make_request=make,
            timeout_s=UPLOAD_TIMEOUT_S,
            connections=16,
            classify=classify,
            on_result=on_result,
        )

    async def poll(self, g: Grade, t: Tracked, gate: asyncio.Semaphore) -> None:
        async with gate:
            ex = await g.request("GET", f"/v1/uploads/{t.id}")
        if ex.status != 200:
            return
        data = json_object(ex)
        if data is None:
            return
        t.data = data
        if data.get("status") in TERMINAL:
            t.status, t.finished_at = data["status"], time.monotonic()
        else:
            t.seen_unfinished = True

    async def poller(self, g: Grade, loads_done: asyncio.Event) -> None:
        """Follow every accepted upload until it finishes; after the load, for DRAIN_S at most."""
        gate = asyncio.Semaphore(POLL_CONCURRENCY)
        deadline = math.inf
        while True:
            if loads_done.is_set() and deadline == math.inf:
                deadline = time.monotonic() + DRAIN_S
            open_ = [t for t in self.tracked.values() if t.status is None]
            if loads_done.is_set() and (not open_ or time.monotonic() >= deadline):
                return
            await asyncio.gather(*(self.poll(g, t, gate) for t in open_))
            await asyncio.sleep(POLL_EVERY_S)

    async def load(self, g: Grade) -> None:
        """The engine's steady and fault runs, with every accepted upload followed beside them
        until it finishes; the uploads refused for want of a store are resent after them."""
        grading = self.spec.grading
        gen = Generator(g.rng, self.nonce)
        steady_n = math.ceil(grading.rate * grading.duration_s - 1e-9)
        fault_n = math.ceil(grading.rate * grading.fault_duration_s - 1e-9)
        budget = MAX_TOTAL_BYTES * steady_n // max(1, steady_n + fault_n)
        self.segments = {
            "steady": self.uploads(g, gen, steady_n, budget),
            "faults": self.uploads(g, gen, fault_n, MAX_TOTAL_BYTES - budget),
        }
        uploaded = sum(len(c.body) for csvs in self.segments.values() for c in csvs)
        g.metric("pipeline.bytes_uploaded", uploaded)
        loads_done = asyncio.Event()
        poller = asyncio.create_task(self.poller(g, loads_done))
        try:
            await super().load(g)
            await self.resend_unavailable(g)
        finally:
            loads_done.set()
            await poller

    def faulted(self, g: Grade, result: LoadResult, windows: list[FaultWindow]) -> None:
        """The fault run's p99 and the uploads refused while a store was down, then the
        standard checks."""
        g.metric("faults.p99_ms", round(result.percentile_ms(99), 2))
        g.metric("faults.errors", sum(w.errors_during for w in windows))
        super().faulted(g, result, windows)

    async def resend_unavailable(self, g: Grade) -> None:
        """Resend, like a client would, every upload refused with 5xx or left unanswered, for
        :data:`RESEND_BUDGET_S` at most; one still not accepted then is refused for good."""
        end = time.monotonic() + RESEND_BUDGET_S
        pending, self.unavailable = self.unavailable, []
        slots = asyncio.Semaphore(4)

        async def resend(csv: Csv) -> None:
            ex = None
            while time.monotonic() < end:
                async with slots:
                    sent_at = time.monotonic()
                    ex, upload_id = await self.upload(g, csv.body)
                if upload_id is not None:
                    self.tracked[upload_id] = Tracked(upload_id, csv, sent_at)
                    return
                if ex.status and ex.status < 500:
                    break
                await asyncio.sleep(0.5)
            why = "no answer" if ex is None or not ex.status else f"{ex.status} {ex.text(120)}"
            self.refused.append((csv, f"{why} (resent for {RESEND_BUDGET_S:g} s)"))

        await asyncio.gather(*(resend(c) for c in pending))
        g.metric("pipeline.resent", len(pending))

    # -- verification ---------------------------------------------------------------------
    async def verify(self, g: Grade) -> None:
        tracked = list(self.tracked.values())
        finished = [t for t in tracked if t.status is not None]
        unfinished = [t for t in tracked if t.status is None]
        originals = self.originals(g)
        unreadable = 0
        if originals is not None:
            gate = asyncio.Semaphore(6)

            async def check(t: Tracked) -> None:
                nonlocal unreadable
                async with gate:
                    try:
                        t.stored = await originals.sha256(t.id) == t.csv.sha256
                    except (BotoCoreError, ClientError):
                        unreadable += 1

            await asyncio.gather(*(check(t) for t in finished))
        missing = [t for t in finished if t.stored is False]
        wrong = [(t, p) for t in finished if (p := result_problems(t.csv, t.data))]
        refused = self.refused
        lost = len(unfinished) + len(missing) + len(refused)
        done_s = sorted(t.finished_at - t.sent_at for t in finished if t.finished_at is not None)
        p95 = percentile(done_s, 95)
        g.metric("pipeline.accepted", len(tracked))
        g.metric("pipeline.lost", lost)
        g.metric("pipeline.unfinished", len(unfinished))
        g.metric("pipeline.refused", len(refused))
        g.metric("pipeline.refused_max_bytes", max((len(c.body) for c, _ in refused), default=0))
        g.metric("pipeline.missing_originals", len(missing))
        g.metric("pipeline.wrong_results", len(wrong))
        p50 = percentile(done_s, 50)
        g.metric("pipeline.done_p50_s", None if p50 is None else round(p50, 2))
        g.metric("pipeline.done_p95_s", None if p95 is None else round(p95, 2))
        g.metric("pipeline.done_max_s", round(done_s[-1], 2) if done_s else None)
        g.metric("pipeline.seen_unfinished", sum(t.seen_unfinished for t in tracked))

        if not tracked and not refused:
            for check_id in ("pipeline.durable", "pipeline.correct", "pipeline.latency"):
                g.check(check_id, "Needs accepted uploads", Status.ERROR, detail="none accepted")
            return
        examples = [
            f"{t.id}: never finished (last seen {t.data.get('status')!r})" for t in unfinished
        ]
        examples += [
            f"{t.id}: ended {t.status!r} but s3://<S3_BUCKET>/uploads/{t.id} is missing or different"
            for t in missing
        ]
        examples += [
            f"a {len(c.body) / 1e6:.1f} MB {'malformed ' if c.malformed else ''}upload "
            f"refused: {why}"
            for c, why in refused
        ]
        status = Status.PASS if lost == 0 else Status.FAIL
        if lost == 0 and unreadable:
            status = Status.ERROR
        g.check(
            "pipeline.durable",
            "Every upload is accepted and finishes, and its original is in S3 byte for byte",
            status,
            detail=(
                f"{len(tracked)} uploads accepted during the load: {len(unfinished)} never "
                f"finished within {DRAIN_S:g} s after it, {len(missing)} finished without their "
                f"original in the bucket; {len(refused)} uploads the contract says to accept "
                "were refused for good (counted as lost)"
                + (f"; {unreadable} originals could not be read" if unreadable else "")
            ),
            expected="0 uploads lost or refused",
            actual=f"{lost} lost" + (": " + "; ".join(examples[:3]) if examples else ""),
        )
        g.check(
            "pipeline.correct",
            "Every finished upload has the right result (or failed, when malformed)",
            not wrong,
            detail=f"{len(wrong)} of {len(finished)} finished uploads answered wrongly"
            + (f"; first: {wrong[0][0].id}: {'; '.join(wrong[0][1])}" if wrong else ""),
            expected="rows, sha256 and amount_total of each upload",
            actual=wrong[0][0].data if wrong else None,
        )
        g.check(
            "pipeline.latency",
            f"95% of uploads are finished within {DONE_P95_LIMIT_S:g} s of being sent",
            p95 is not None and p95 <= DONE_P95_LIMIT_S,
            detail=f"p95 {p95:.2f} s, slowest {done_s[-1]:.2f} s" if done_s else "none finished",
            expected=f"p95 <= {DONE_P95_LIMIT_S:g} s",
            actual=None if p95 is None else f"{p95:.2f} s",
        )
