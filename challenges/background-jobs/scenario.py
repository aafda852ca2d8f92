"""Grades background jobs: accepted fast, every job done right, none lost when a worker process
is killed mid-load, none run twice for one request."""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import time
from collections import Counter, defaultdict
from typing import Any, NamedTuple

from challenges.schema import ChallengeSpec
from grading import JSON_HEADERS, json_object, percentile, poll_until
from grading.load import LoadPlan, Request, Response
from grading.provider import ProviderAdmin
from grading.report import Status
from grading.scenario import Grade
from grading.standard import BadInput, StandardScenario
from provisioning import Resource

PATH = "/v1/jobs"
RETRY_SHARE = 0.15  # of load requests retry a job first sent RETRY_GAP_S earlier
RETRY_GAP_S = (0.3, 1.5)
POLL_EVERY_S = 0.5  # the grader reads every job not yet done this often
DONE_LIMIT_S = 10.0  # every accepted job done within this of its 202
WORKER = "process:worker"


class Job(NamedTuple):
    key: str
    input: str

    def request(self, text: str | None = None) -> dict[str, Any]:
        return {"json": {"input": text or self.input}, "headers": {"Idempotency-Key": self.key}}

    def load_request(self) -> Request:
        headers = (*JSON_HEADERS, ("Idempotency-Key", self.key))
        return Request("POST", PATH, json.dumps({"input": self.input}).encode(), headers, self.key)


class JobsScenario(StandardScenario):
    checks = (
        "contract.healthz",
        "contract.accept",
        "contract.retry",
        "contract.poll",
        "contract.bad-input",
        "load.latency",
        "load.errors",
        "faults.recovery",
        "faults.availability",
        "jobs.completed",
        "jobs.kill-survived",
        "jobs.run-once",
    )
    unit = "jobs"
    availability_title = "Keeps accepting jobs while a worker is killed"

    def __init__(self, spec: ChallengeSpec) -> None:
        super().__init__(spec)
        self.nonce = secrets.token_hex(4)  # fresh keys and inputs on every grade
        self.jobs: dict[str, Job] = {}  # key -> every job the grader sent
        self.ids: defaultdict[str, list[str]] = defaultdict(list)  # key -> ids answered 202
        self.accepted: dict[str, tuple[Job, str, float]] = {}  # id -> (job, segment, accepted)
        self.finished: dict[str, tuple[object, float]] = {}  # id -> (result, seconds to done)
        self.admin: ProviderAdmin | None = None

    def new_job(self, g: Grade) -> Job:
        n = len(self.jobs)
        job = Job(f"key-{self.nonce}-{n}", f"report-{self.nonce}-{n}-{g.rng.randrange(10**6)}")
        return self.jobs.setdefault(job.key, job)

    def answered(self, job: Job, answer: Any, segment: str) -> str | None:
        data = json_object(answer) if answer is not None and answer.status == 202 else None
        job_id = (data or {}).get("id")
        if not isinstance(job_id, str):
            return None
        self.ids[job.key].append(job_id)
        self.accepted.setdefault(job_id, (job, segment, time.monotonic()))
        return job_id

    async def poll(self, g: Grade) -> int:
        """Read every accepted job not yet done once; how many are still not done."""
        pending = [i for i in self.accepted if i not in self.finished]
        answers = await g.burst([("GET", f"{PATH}/{i}", {}) for i in pending])
        for job_id, ex in zip(pending, answers, strict=True):
            data = json_object(ex) or {}
            if ex.status == 200 and data.get("status") == "done":
                elapsed = time.monotonic() - self.accepted[job_id][2]
                self.finished[job_id] = (data.get("result"), elapsed)
        return len(pending) - sum(i in self.finished for i in pending)

    def right(self, job: Job, result: object) -> bool:
        return isinstance(result, str) and (
            not self.admin or result == self.admin.result(job.input)
        )

    async def cases(self, g: Grade) -> None:
        if g.env is not None and Resource.PROVIDER in g.env.resources:
            self.admin = ProviderAdmin.of(g.env.admin(Resource.PROVIDER))
            await self.admin.reset()  # this grade's record of renders starts empty
        job = self.new_job(g)
        ex = await g.request("POST", PATH, **job.request())
        job_id, data = self.answered(job, ex, "contract"), json_object(ex) or {}
        ok = job_id is not None and data.get("status") in ("queued", "running", "done")
        title, actual = (
            "A job is accepted: 202 with its id and status",
            f"{ex.status} {ex.text(200)}",
        )
        g.check(
            "contract.accept", title, ok, exchange=ex, expected="202 {id, status}", actual=actual
        )
        again = await g.request("POST", PATH, **job.request())
        other = await g.request("POST", PATH, **job.request(job.input + "-other"))
        same = self.answered(job, again, "contract") == job_id is not None
        g.check(
            "contract.retry",
            "The same key again gets the same job; with another input, 422",
            same and other.status == 422,
            exchange=other if same else again,
            expected=f"202 with id {job_id}, then 422",
            actual=f"{again.status} {again.text(120)}, then {other.status}",
        )
        unknown = await g.request("GET", f"{PATH}/job-{self.nonce}-unknown")
        left, _ = await poll_until(
            lambda: self.poll(g), lambda n: n == 0, limit_s=DONE_LIMIT_S, every_s=0.2
        )
        result = self.finished.get(job_id or "", (None, 0.0))[0]
        g.check(
            "contract.poll",
            "GET /v1/jobs/<id> answers the job, done with its render's result; 404 when unknown",
            unknown.status == 404 and not left and self.right(job, result),
            exchange=unknown,
            expected=f"404, and the job done within {DONE_LIMIT_S:g} s with its render's result",
            actual=f"{unknown.status}, job {'not done' if left else f'done with result {result!r}'}",
        )

    def bad_inputs(self, g: Grade) -> list[BadInput]:
        key = {"Idempotency-Key": f"bad-{self.nonce}"}
        return [
            BadInput("no Idempotency-Key", "POST", PATH, json={"input": "x"}),
            BadInput("empty Idempotency-Key", "POST", PATH, json={"input": "x"}, headers={"Idempotency-Key": ""}),
            BadInput("Idempotency-Key of 256 characters", "POST", PATH, json={"input": "x"}, headers={"Idempotency-Key": "k" * 256}),
            BadInput("body not JSON", "POST", PATH, body=b"input=x", headers=key),
            BadInput("no input", "POST", PATH, json={}, headers=key),
            BadInput("empty input", "POST", PATH, json={"input": ""}, headers=key),
            BadInput("input of 201 characters", "POST", PATH, json={"input": "i" * 201}, headers=key),
            BadInput("input a number", "POST", PATH, json={"input": 5}, headers=key),
        ]  # fmt: skip

    def traffic(self, g: Grade, segment: str, duration_s: float) -> LoadPlan:
        """New jobs at the graded rate; RETRY_SHARE retry a job sent 0.3–1.5 s earlier."""
        rate = self.spec.grading.rate
        lo, hi = (max(1, round(gap * rate)) for gap in RETRY_GAP_S)
        plan: list[Job] = []
        for i in range(math.ceil(rate * duration_s)):
            retry = i >= lo and g.rng.random() < RETRY_SHARE
            plan.append(plan[i - g.rng.randint(lo, min(i, hi))] if retry else self.new_job(g))

        def classify(_req: Request, resp: Response) -> str | None:
            good = isinstance((json_object(resp) or {}).get("id"), str)
            return f"http_{resp.status}" if resp.status != 202 else None if good else "wrong_body"

        def on_result(_i: int, req: Request, resp: Response | None, *_: float) -> None:
            self.answered(self.jobs[req.tag], resp, segment)

        return LoadPlan(
            rate,
            duration_s,
            [j.load_request() for j in plan].__getitem__,
            classify=classify,
            on_result=on_result,
        )

    async def alongside(self, g: Grade, segment: str, duration_s: float) -> None:
        """Read the jobs not yet done every POLL_EVERY_S while the load runs."""
        end = time.monotonic() + duration_s
        while time.monotonic() < end:
            await asyncio.gather(self.poll(g), asyncio.sleep(POLL_EVERY_S))

    def failed(self, segments: set[str]) -> list[str]:
        """The accepted jobs of ``segments`` not done right within DONE_LIMIT_S, with why."""
        bad = []
        for job_id, (job, segment, _) in self.accepted.items():
            result, elapsed = self.finished.get(job_id, (None, math.inf))
            if segment in segments and not (elapsed <= DONE_LIMIT_S and self.right(job, result)):
                why = (
                    "never done" if elapsed == math.inf else f"result {result!r} in {elapsed:.1f} s"
                )
                bad.append(f"{job_id} ({job.input}): {why}")
        return bad

    async def verify(self, g: Grade) -> None:
        await poll_until(
            lambda: self.poll(g), lambda n: n == 0, limit_s=DONE_LIMIT_S, every_s=POLL_EVERY_S
        )
        killed = [w for w in g.fault_windows if w.resource == WORKER and w.error is None]
        late = [s for _, s in self.finished.values()]
        g.metric("jobs.accepted", len(self.accepted))
        g.metric("jobs.lost", len(self.accepted) - len(self.finished))
        g.metric("jobs.done_p50_s", round(percentile(late, 50) or 0, 2))
        g.metric("jobs.done_p95_s", round(percentile(late, 95) or 0, 2))
        g.metric("jobs.workers_killed", len(killed))
        groups = {"contract", "steady"} | (set() if killed else {"faults"})
        for check_id, segments, title in (
            ("jobs.completed", groups, "Every accepted job is done with its render's result"),
            ("jobs.kill-survived", {"faults"}, "No job is lost when a worker is killed mid-job"),
        ):
            bad, of = (
                self.failed(segments),
                sum(s in segments for _, s, _ in self.accepted.values()),
            )
            g.metric(f"{check_id}_failed", len(bad))
            if check_id == "jobs.kill-survived" and not killed:
                why = g.process_fault_reason(WORKER) if g.can_inject else None
                g.check(check_id, title, Status.SKIP, detail=why or "no worker was killed")
                continue
            detail = f"{len(bad)} of {of} jobs not done right within {DONE_LIMIT_S:g} s"
            g.check(
                check_id, title, not bad and of > 0, detail=detail, evidence={"examples": bad[:5]}
            )
        calls = [
            c for c in (await self.admin.calls() if self.admin else []) if c.path == "/v1/render"
        ]
        renders = Counter(str(c.body.get("input")) for c in calls if c.delivered)
        twice = [f"{i}: {n} renders" for i, n in renders.items() if n > 1]
        split = [f"{k}: {ids}" for k, ids in self.ids.items() if len(set(ids)) > 1]
        g.metric("jobs.rendered_twice", len(twice) if self.admin else None)
        g.metric("jobs.retry_mismatch", len(split))
        g.metric("jobs.render_calls_per_job", round(len(calls) / max(1, len(self.accepted)), 2))
        g.check(
            "jobs.run-once",
            "No request's job runs twice: one job per key, one render per job",
            not twice and not split,
            detail=f"{len(twice)} inputs rendered more than once; {len(split)} retried keys got "
            "another job" + ("" if self.admin else " (renders not counted: no rendering service)"),
            evidence={"examples": (twice + split)[:5]},
        )
