"""Grades a file pipeline: the contract, a stream of CSV uploads of mixed sizes while S3 crashes
and the queue dies, then every accepted upload against its result and its stored original."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import secrets
import time
from decimal import Decimal
from typing import Any, NamedTuple

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from challenges.schema import ChallengeSpec
from grading.http import Exchange
from grading.load import LoadPlan, LoadResult, Request, Response
from grading.nemesis import FaultWindow
from grading.report import Status
from grading.scenario import Grade, Scenario
from provisioning import Resource

HEADER = b"id,customer,amount,note\n"
NOTES = (b"", b"paid", b'"net 30, paid"', b'"see ""ticket 7"""', b"late")
BLOCKS = 48  # pre-generated blocks of rows that uploads are assembled from
BLOCK_ROWS = 300
SIZES = ((0.70, 1_000, 40_000), (0.22, 100_000, 600_000), (0.08, 1_000_000, 3_000_000))
MAX_TOTAL_BYTES = 40_000_000  # all uploads of a grade together
MALFORMED_EVERY = 12  # about one upload in 12 is malformed on purpose
LARGE_CONTRACT_BYTES = 4_000_000
CONTRACT_WAIT_S = 15.0
DRAIN_S = 25.0  # after the load, how long accepted uploads may take to finish
POLL_EVERY_S = 0.25
POLL_CONCURRENCY = 8
DONE_P95_LIMIT_S = 10.0
RECOVERY_LIMIT_S = 5.0
UPLOAD_TIMEOUT_S = 15.0
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


def amount_text(cents: int) -> bytes:
    return str(Decimal(cents).scaleb(-2)).encode()


class Generator:
    """Seeded CSVs: blocks of rows are made once, uploads are assembled from them."""

    def __init__(self, rng: Any, nonce: str) -> None:
        self.rng = rng
        self.nonce = nonce
        self.count = 0
        self.blocks = [self.block(b) for b in range(BLOCKS)]

    def row(self, key: str, cents: int) -> bytes:
        customer = f"cust-{self.rng.randrange(1000)}".encode()
        note = NOTES[self.rng.randrange(len(NOTES))]
        return b",".join((key.encode(), customer, amount_text(cents), note)) + b"\n"

    def block(self, b: int) -> tuple[bytes, int]:
        cents = [self.rng.randint(-50_000, 2_000_000) for _ in range(BLOCK_ROWS)]
        body = b"".join(self.row(f"r{b}-{i}", c) for i, c in enumerate(cents))
        return body, sum(cents)

    def csv(self, size: int, *, malformed: bool = False) -> Csv:
        """About ``size`` bytes; the first row is unique to this grade and upload."""
        self.count += 1
        first_cents = self.rng.randint(1, 99_999)
        parts = [HEADER, self.row(f"u-{self.nonce}-{self.count}", first_cents)]
        cents, rows = first_cents, 1
        block_size = len(self.blocks[0][0])
        for _ in range(max(0, round((size - 60) / block_size))):
            body, total = self.blocks[self.rng.randrange(BLOCKS)]
            parts.append(body)
            cents, rows = cents + total, rows + BLOCK_ROWS
        if malformed:
            bad = (b"x,cust-1,1.00,note,extra field\n", b"x,cust-1,12.5.1,\n", b'x,cust-1,"1,5",\n')
            parts.insert(self.rng.randrange(2, len(parts) + 1), bad[self.rng.randrange(3)])
        return Csv(b"".join(parts), rows, Decimal(cents).scaleb(-2), malformed)

    def size(self) -> int:
        pick = self.rng.random()
        for share, lo, hi in SIZES:
            if pick < share:
                return self.rng.randint(lo, hi)
            pick -= share
        return SIZES[-1][2]


def upload_id_of(body: bytes) -> str | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    upload_id = data.get("id") if isinstance(data, dict) else None
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
        problems.append(f"amount_total {total!r}, expected {str(csv.amount_total)!r} (a string)")
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


class FilePipelineScenario(Scenario):
    def __init__(self, spec: ChallengeSpec) -> None:
        self.spec = spec
        self.nonce = secrets.token_hex(3)  # fresh rows on every run; never affects the verdict
        self.tracked: dict[str, Tracked] = {}
        self.bytes_sent = 0

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
        ex, data = None, {}
        end = time.monotonic() + CONTRACT_WAIT_S
        while time.monotonic() < end:
            ex = await g.request("GET", f"/v1/uploads/{upload_id}")
            try:
                got = ex.json()
            except ValueError:
                got = None
            if isinstance(got, dict):
                data = got
                status = got.get("status")
                if not seen or seen[-1] != status:
                    seen.append(str(status))
                if status in TERMINAL:
                    break
            await asyncio.sleep(0.1)
        return ex, data, seen

    async def contract(self, g: Grade) -> None:
        gen = Generator(g.rng, self.nonce)
        ex = await g.request("GET", "/healthz")
        g.check(
            "contract.healthz",
            "GET /healthz answers 200",
            ex.status == 200,
            exchange=ex,
            expected=200,
            actual=ex.status,
        )
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
        g.progress(0.9)
        ex = await g.request("GET", f"/v1/uploads/unknown-{secrets.token_hex(6)}")
        g.check(
            "contract.unknown",
            "GET of an unknown id answers 404",
            ex.status == 404,
            exchange=ex,
            expected=404,
            actual=ex.status,
        )
        g.progress(1.0)

    def sample_csv(self, gen: Generator) -> Csv:
        """A small CSV with quoting, a quoted amount and the amount column in second place."""
        lines = [
            b"customer,amount,id,note\r\n",
            b'"Acme, Inc.",12.50,c1,"first ""big"" order"\r\n',
            b"Globex,-3,c2,\r\n",
            b'Initech,"1000.125",c3,refund\r\n',
            b"Umbrella,0.005,c4,\r\n",
        ]
        total = Decimal("12.50") - 3 + Decimal("1000.125") + Decimal("0.005")
        extra = gen.csv(2_000)
        rows = [line.split(b",", 3) for line in extra.body.splitlines()[1:]]
        lines += [b",".join((r[1], r[2], r[0], r[3])) + b"\r\n" for r in rows]
        return Csv(b"".join(lines), 4 + extra.rows, total + extra.amount_total, False)

    async def follow(self, g: Grade, upload_id: str, csv: Csv) -> None:
        first = await g.request("GET", f"/v1/uploads/{upload_id}")
        try:
            data = first.json()
        except ValueError:
            data = None
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
                "amount_total": str(csv.amount_total),
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
            f"A {len(csv.body) / 1e6:.1f} MB upload is accepted and processed",
            not problems,
            detail="; ".join(problems),
            exchange=ex,
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
        sizes = [gen.size() for _ in range(count)]
        scale = min(1.0, budget / max(1, sum(sizes)))
        return [
            gen.csv(int(s * scale), malformed=(i % MALFORMED_EVERY == MALFORMED_EVERY // 2))
            for i, s in enumerate(sizes)
        ]

    def plan(self, csvs: list[Csv], duration_s: float) -> LoadPlan:
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
        try:
            data = ex.json()
        except ValueError:
            return
        if not isinstance(data, dict):
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
        grading = self.spec.grading
        gen = Generator(g.rng, self.nonce)
        steady_n = math.ceil(grading.rate * grading.duration_s - 1e-9)
        fault_n = math.ceil(grading.rate * grading.fault_duration_s - 1e-9)
        budget = MAX_TOTAL_BYTES * steady_n // max(1, steady_n + fault_n)
        steady = self.uploads(g, gen, steady_n, budget)
        faulty = self.uploads(g, gen, fault_n, MAX_TOTAL_BYTES - budget)
        self.bytes_sent = sum(len(c.body) for c in steady + faulty)
        g.metric("pipeline.bytes_uploaded", self.bytes_sent)
        steps = [f.step(g.rng) for f in grading.faults]
        loads_done = asyncio.Event()
        poller = asyncio.create_task(self.poller(g, loads_done))
        try:
            result, _ = await g.run_load(self.plan(steady, grading.duration_s))
            self.report_load(g, result)
            if steps and g.can_inject and grading.fault_duration_s > 0:
                g.phase = "faults"
                result, windows = await g.run_load(
                    self.plan(faulty, grading.fault_duration_s), faults=steps
                )
                self.report_faults(g, result, windows)
            elif steps:
                g.skip_faults("faults.recovery", "faults.availability")
        finally:
            loads_done.set()
            await poller

    def report_load(self, g: Grade, result: LoadResult) -> None:
        grading = self.spec.grading
        g.metric("load.rate_target", grading.rate)
        g.metric("load.p50_ms", round(result.percentile_ms(50), 2))
        g.metric("load.p99_ms", round(result.percentile_ms(99), 2))
        g.metric("load.error_rate", round(result.error_rate, 4))
        for check_id, name, title in (
            ("load.latency", "latency", "Acknowledgement latency"),
            ("load.errors", "errors", "Refused uploads"),
        ):
            g.judge(
                check_id,
                f"{title}: {self.spec.thresholds[name]} at {grading.rate:g} uploads/s",
                self.spec.thresholds[name],
                result,
            )

    def report_faults(self, g: Grade, result: LoadResult, windows: list[FaultWindow]) -> None:
        g.metric("faults.p99_ms", round(result.percentile_ms(99), 2))
        g.metric("faults.error_rate", round(result.error_rate, 4))
        errors = sum(w.errors_during for w in windows)
        g.metric("faults.errors", errors)
        g.recovery(
            windows,
            RECOVERY_LIMIT_S,
            title=f"Accepts uploads again within {RECOVERY_LIMIT_S:g} s after each fault heals",
        )
        g.availability(
            "Keeps accepting uploads while a store is down",
            result,
            f"{result.error_rate:.1%} of uploads were refused during the fault run "
            f"({errors} inside the fault windows); a refused upload was never accepted, "
            "so it is not lost — the client still holds it",
            penalty=4,
        )

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
        lost = len(unfinished) + len(missing)
        done_s = sorted(t.finished_at - t.sent_at for t in finished if t.finished_at is not None)
        p95 = done_s[max(0, math.ceil(0.95 * len(done_s)) - 1)] if done_s else None
        g.metric("pipeline.accepted", len(tracked))
        g.metric("pipeline.lost", lost)
        g.metric("pipeline.unfinished", len(unfinished))
        g.metric("pipeline.missing_originals", len(missing))
        g.metric("pipeline.wrong_results", len(wrong))
        p50 = done_s[max(0, math.ceil(0.5 * len(done_s)) - 1)] if done_s else None
        g.metric("pipeline.done_p50_s", None if p50 is None else round(p50, 2))
        g.metric("pipeline.done_p95_s", None if p95 is None else round(p95, 2))
        g.metric("pipeline.done_max_s", round(done_s[-1], 2) if done_s else None)
        g.metric("pipeline.seen_unfinished", sum(t.seen_unfinished for t in tracked))

        if not tracked:
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
        status = Status.PASS if lost == 0 else Status.FAIL
        if lost == 0 and unreadable:
            status = Status.ERROR
        g.check(
            "pipeline.durable",
            "Every accepted upload finishes, and its original is in S3 byte for byte",
            status,
            detail=(
                f"{len(tracked)} uploads accepted during the load: {len(unfinished)} never "
                f"finished within {DRAIN_S:g} s after it, {len(missing)} finished without their "
                "original in the bucket"
                + (f"; {unreadable} originals could not be read" if unreadable else "")
            ),
            expected="0 acknowledged uploads lost",
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
