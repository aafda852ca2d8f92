"""A real grade on a killed worker: two ``cruscible worker`` processes (the real command), the
learner's environment made by a worker, a reference design serving on it; the worker grading it
is killed (kill -9) — during the load, or while its fault holds Redis paused — and the other
grades it again from the start, after bringing back what the fault left down: the learner's
report is a real one, published once."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable

import pytest
from sqlalchemy import select

from bot.app import App
from bot.core.outbox import Actor
from bot.store import Publication
from challenges.launch import running
from provisioning.local import processes
from tests.e2e.newcomer import servers_of
from tests.scale.conftest import RecordingOutbox, Workers, front_end, until
from tests.scale.test_worker_cli import cruscible

ADA = Actor("console", "ada", "ada")
CHALLENGE, DESIGN = "cache-slow-api", "refresh_ahead"  # a design on Redis: its fault pauses it


def redis_paused(front: App, env_id: str) -> bool:
    """Whether the environment's Redis is stopped (SIGSTOP) now: one look at its processes. (A
    health check also probes the other servers, up to 2 s each on a busy machine: long enough
    to miss a 1.5 s pause between two looks.)"""
    servers = servers_of(front.settings.data_dir, root=os.geteuid() == 0)
    redis = [m for m in processes.scan(servers) if (m.env_id, m.resource) == (env_id, "redis")]
    return bool(redis) and all(state == "T" for state in processes.states(redis))


async def wait_for_load(front: App, env_id: str, out: RecordingOutbox) -> None:
    await until(lambda: any(": load (" in line for line in out.shown()), within=180)


async def wait_for_pause(front: App, env_id: str, out: RecordingOutbox) -> None:
    async with asyncio.timeout(240):
        while not redis_paused(front, env_id):  # noqa: ASYNC110 (another process)
            await asyncio.sleep(0.02)


@pytest.mark.parametrize("moment", [wait_for_load, wait_for_pause], ids=["load", "fault"])
async def test_a_worker_killed_in_a_real_grade_hands_it_to_another(
    db_url: str,
    workers: Workers,
    moment: Callable[[App, str, RecordingOutbox], Awaitable[None]],
) -> None:
    async with front_end(db_url, workers.root) as front:
        data = front.settings.data_dir  # the workers share the front end's environments
        pair = [workers.start(argv=[*cruscible(), "worker"], data_dir=data) for _ in "12"]
        await workers.registered(2, within=90)
        env = await front.coach.provision(ADA, CHALLENGE, RecordingOutbox())
        module = front.coach.challenge(CHALLENGE).solution(DESIGN).module
        async with running(module, env.bundle) as service:
            out = RecordingOutbox()
            submitted = asyncio.create_task(front.coach.submit(ADA, CHALLENGE, service.url, out))
            await moment(front, env.id, out)
            victim = next(w for w in pair if "Starting job grade[" in workers.log_of(w))
            survivor = next(w for w in pair if w is not victim)
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait(10)

            done = await asyncio.wait_for(submitted, 400)

        assert survivor.poll() is None, workers.logs()
        assert "Starting job grade[" in workers.log_of(survivor)  # graded again, there
        assert done.status == "done" and done.attempts == 2, (done.error, workers.logs())
        assert any("restarted" in line for line in out.shown()), out.shown()
        await until(lambda: any("scored" in m.title for m in out.posts), within=60)
        await asyncio.sleep(1.0)  # a second publication would come from the settle job now
        cards = [m for m in out.posts if "scored" in m.title]
        assert len(cards) == 1 and f"scored {done.score}/100" in cards[0].title
        assert done.passed, cards[0].body  # a real grade of a reference design, not a stand-in
        if moment is wait_for_pause:  # the dead worker never healed its fault: the next did
            assert "brought back before grading: redis: resume" in workers.log_of(survivor)
        async with front.store.session() as s:
            pub = await s.scalar(select(Publication).where(Publication.submission_id == done.id))
        assert pub is not None and pub.status == "published" and pub.attempts == 1
        assert "Traceback" not in workers.logs()
