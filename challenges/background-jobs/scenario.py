"""Grades background jobs: accepted fast, each done right once, none lost with a killed worker."""

from __future__ import annotations

import asyncio
import json
import math
import operator
import secrets
import time
from collections import Counter
from typing import Any, NamedTuple

from challenges.schema import ChallengeSpec
from grading import JSON_HEADERS, json_object, percentile, poll_until, with_retries
from grading.load import LoadPlan, Request, Response
from grading.report import Status
from grading.scenario import Grade
from grading.standard import BadInput, StandardScenario

PATH = "/v1/jobs"
RETRY_SHARE, RETRY_GAP_S = 0.15, (0.3, 1.5)  # of load requests retry a job sent so long before
POLL_S, DONE_LIMIT_S = 0.5, 10.0  # jobs not done are read this often; each done within the limit
DONE_ON_ACCEPT = 0.1  # more new jobs than this share answered already done: rendered inline
WORKER, KEY = "process:worker", "Idempotency-Key"


class Job(NamedTuple):
    key: str
    input: str

    def request(self, text: str = "") -> dict[str, Any]:
        return {"json": {"input": text or self.input}, "headers": {KEY: self.key}}

    def load_request(self) -> Request:
        headers = (*JSON_HEADERS, (KEY, self.key))
        return Request("POST", PATH, json.dumps({"input": self.input}).encode(), headers, self.key)


class JobsScenario(StandardScenario):
    checks = (
        "contract.healthz", "contract.accept", "contract.retry", "contract.poll",
        "contract.bad-input", "load.latency", "load.errors", "faults.recovery",
        "faults.availability", "jobs.async", "jobs.completed", "jobs.kill-survived",
        "jobs.run-once",
    )  # fmt: skip
    unit = "jobs"
    availability_title = "Keeps accepting jobs while a worker is killed"

    def __init__(self, spec: ChallengeSpec) -> None:
        super().__init__(spec)
        self.nonce = secrets.token_hex(4)  # fresh keys and inputs on every grade
        self.jobs: dict[str, Job] = {}  # key -> every job the grader sent
        self.accepted: dict[str, tuple[Job, str, float, object]] = {}  # id -> (job, segment,
        # when its first 202 came, the status that 202 said)
        self.finished: dict[str, tuple[object, float]] = {}  # id -> (result, seconds to done)

    def new_job(self, g: Grade) -> Job:
        n = len(self.jobs)
        job = Job(f"key-{self.nonce}-{n}", f"report-{self.nonce}-{n}-{g.rng.randrange(10**6)}")
        return self.jobs.setdefault(job.key, job)

    def answered(self, job: Job, answer: Any, segment: str) -> str | None:
        """Record a 202 for ``job`` (an exchange or a load response); the job's id."""
        data = (json_object(answer) if answer is not None and answer.status == 202 else None) or {}
        if not isinstance(job_id := data.get("id"), str):
            return None
        self.accepted.setdefault(job_id, (job, segment, time.monotonic(), data.get("status")))
        return job_id

    async def poll(self, g: Grade) -> int:
        """Read every accepted job not yet done, once; how many are still not done."""
        pending = [i for i in self.accepted if i not in self.finished]
        answers = await g.burst([("GET", f"{PATH}/{i}", {}) for i in pending])
        for job_id, ex in zip(pending, answers, strict=True):
            if ex.status == 200 and (data := json_object(ex) or {}).get("status") == "done":
                waited = time.monotonic() - self.accepted[job_id][2]
                self.finished[job_id] = (data.get("result"), waited)
        return sum(i not in self.finished for i in pending)

    async def cases(self, g: Grade) -> None:
        job = self.new_job(g)
        ex = await g.request("POST", PATH, **job.request())
        job_id, status = self.answered(job, ex, "contract"), (json_object(ex) or {}).get("status")
        ok = job_id is not None and status in ("queued", "running", "done")
        g.check("contract.accept", "A job is answered 202 with its id and status", ok, exchange=ex)
        again = await g.request("POST", PATH, **job.request())
        other = await g.request("POST", PATH, **job.request(job.input + "-other"))
        ok = self.answered(job, again, "contract") == job_id is not None and other.status == 422
        got = f"{again.status} {again.text(120)}, then {other.status}"
        title = "The same key again gets the same job; with another input, 422"
        g.check("contract.retry", title, ok, expected=f"{job_id}, 422", actual=got)
        unknown = await g.request("GET", f"{PATH}/job-{self.nonce}-unknown")
        await poll_until(lambda: self.poll(g), operator.not_, limit_s=DONE_LIMIT_S, every_s=0.2)
        bad = self.failed({"contract"})[0] or ([] if job_id else ["not accepted"])
        title = "GET /v1/jobs/<id> answers the job, done with its render's result; 404 when unknown"
        ok = unknown.status == 404 and not bad
        g.check("contract.poll", title, ok, exchange=unknown, expected="404", actual=bad or None)

    def bad_inputs(self, g: Grade) -> list[BadInput]:
        key = f"bad-{self.nonce}"
        return [
            BadInput(label, "POST", PATH, json=body, body=raw, headers={KEY: k} if k else {})
            for label, k, body, raw in (
                ("no Idempotency-Key", "", {"input": "x"}, None),
                ("Idempotency-Key of 256 characters", "k" * 256, {"input": "x"}, None),
                ("body not JSON", key, None, b"input=x"),
                ("no input", key, {}, None),
                ("input of 201 characters", key, {"input": "i" * 201}, None),
                ("input a number", key, {"input": 5}, None),
            )
        ]

    def traffic(self, g: Grade, segment: str, duration_s: float) -> LoadPlan:
        """New jobs at the graded rate; RETRY_SHARE retry a job sent 0.3–1.5 s earlier."""
        rate = self.spec.grading.rate
        plan = with_retries(
            g.rng,
            lambda: self.new_job(g),
            rate=rate,
            duration_s=duration_s,
            share=RETRY_SHARE,
            gap_s=RETRY_GAP_S,
        )

        def classify(_req: Request, resp: Response) -> str | None:
            good = isinstance((json_object(resp) or {}).get("id"), str)
            return f"http_{resp.status}" if resp.status != 202 else None if good else "wrong_body"

        make = [j.load_request() for j in plan].__getitem__

        def on_result(_i: int, req: Request, resp: Response | None, *_: float) -> None:
            self.answered(self.jobs[req.tag], resp, segment)

        return LoadPlan(rate, duration_s, make, classify=classify, on_result=on_result)

    async def alongside(self, g: Grade, segment: str, duration_s: float) -> None:
        """Read the jobs not yet done every POLL_S while the load runs (their time to done)."""
        end = time.monotonic() + duration_s
        while time.monotonic() < end:
            await asyncio.gather(self.poll(g), asyncio.sleep(POLL_S))

    def failed(self, segments: set[str]) -> tuple[list[str], int]:
        """(the jobs of ``segments`` not done right within DONE_LIMIT_S, why; how many there are)"""
        bad, of = [], 0
        for job_id, (job, segment, *_) in self.accepted.items():
            result, elapsed = self.finished.get(job_id, (None, math.inf))
            want = self.provider.result(job.input) if self.provider else result
            of += segment in segments
            right = isinstance(result, str) and result == want and elapsed <= DONE_LIMIT_S
            if segment in segments and not right:
                why = "never done" if elapsed == math.inf else f"{result!r} in {elapsed:.1f} s"
                bad.append(f"{job_id} ({job.input}): {why}")
        return bad, of

    async def verify(self, g: Grade) -> None:
        await poll_until(lambda: self.poll(g), operator.not_, limit_s=DONE_LIMIT_S, every_s=POLL_S)
        killed = [w for w in g.fault_windows if w.resource == WORKER and w.error is None]
        waits = [s for _, s in self.finished.values()]
        early = sum(a[3] == "done" for a in self.accepted.values())
        g.metric("jobs.lost", len(self.accepted) - len(self.finished))
        g.metric("jobs.done_p95_s", round(percentile(waits, 95) or 0, 2))
        g.metric("jobs.workers_killed", len(killed))
        g.metric("jobs.done_on_accept", round(early / max(1, len(self.accepted)), 3))
        detail = f"{early} of {len(self.accepted)} new jobs were answered already done"
        ok = early <= DONE_ON_ACCEPT * len(self.accepted)
        g.check("jobs.async", "A new job is answered before it is done", ok, detail=detail)
        for check_id, segments, title in (
            ("jobs.completed", {"contract", "steady"} | (set() if killed else {"faults"}),
             "Every accepted job is done with its render's result"),
            ("jobs.kill-survived", {"faults"}, "No job is lost when a worker is killed mid-job"),
        ):  # fmt: skip
            bad, of = self.failed(segments)
            g.metric(f"{check_id}_failed", len(bad))
            if check_id == "jobs.kill-survived" and not killed:
                why = g.process_fault_reason(WORKER) if g.can_inject else None
                g.check(check_id, title, Status.SKIP, detail=why or "no worker was killed")
                continue
            detail, evidence = f"{len(bad)} of {of} not done right in time", {"examples": bad[:5]}
            g.check(check_id, title, of > 0 and not bad, detail=detail, evidence=evidence)
        await self.run_once(g)

    async def run_once(self, g: Grade) -> None:
        """``jobs.run-once``: one job per key, and one render billed per input at the service."""
        inputs = [j.input for j in self.jobs.values()]  # calls for other grades' jobs aside
        renders = await self.provider.deliveries("input", inputs) if self.provider else Counter()
        twice = [f"{i}: {n} renders" for i, n in renders.items() if n > 1]
        keys = Counter(job.key for job, *_ in self.accepted.values())
        split = [f"{k}: {n} jobs" for k, n in keys.items() if n > 1]
        g.metric("jobs.rendered_twice", len(twice) if self.provider else None)
        g.metric("jobs.retry_mismatch", len(split))
        calls = (
            await self.provider.deliveries("input", inputs, replays=True) if self.provider else {}
        )
        g.metric("jobs.render_calls_per_job", round(sum(calls.values()) / max(1, len(keys)), 2))
        detail = f"{len(twice)} inputs rendered more than once, {len(split)} keys got another job"
        title, evidence = "One job per key, one render per job", {"examples": (twice + split)[:5]}
        g.check("jobs.run-once", title, not twice and not split, detail=detail, evidence=evidence)
