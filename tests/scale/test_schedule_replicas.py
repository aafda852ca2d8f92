"""Two bot replicas, each with its own APScheduler, over one real PostgreSQL store: every daily
post and every contest announcement is made exactly once — at the start-up catch-up both run,
when both schedulers fire the same job at the same instant, and when the replica that claimed a
post was killed (-9) before making it (another takes it over once the lease passed)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select

from bot.app import App, open_app
from bot.config import Settings
from bot.core.daily import latest_post_time
from bot.core.firings import Firings
from bot.scheduler import Operations
from bot.store import Community, Contest, DailyPost
from bot.store.models import ScheduleFiring
from tests.community.support import RecordingChannels

ROOT = Path(__file__).resolve().parents[2]
LEASE_S = 3.0  # replicas sweep expired claims every 1.5 s
START_WITHIN_S = 60.0


@pytest.fixture
def root() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="cruscible-schedules-"))
    path.chmod(0o755)  # the local backend's servers run unprivileged
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def admin(db_url: str, root: Path) -> AsyncIterator[App]:
    """This process: the store migrated, communities and contests made as an admin would."""
    data = root / "admin"
    data.mkdir(mode=0o755)
    async with open_app(Settings(database_url=db_url, data_dir=data), reconcile=False) as app:
        yield app


class Replicas:
    def __init__(self, db_url: str, root: Path) -> None:
        self.db_url, self.root = db_url, root
        self.out = root / "posts.jsonl"
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *, crash: bool = False) -> subprocess.Popen[bytes]:
        n = len(self.procs)
        data = self.root / f"replica-{n}"
        data.mkdir(mode=0o755)
        env = os.environ | {
            "CRUSCIBLE_DATABASE_URL": self.db_url,
            "CRUSCIBLE_DATA_DIR": str(data),
            "CRUSCIBLE_SCHEDULE_LEASE": f"PT{LEASE_S}S",
            "CRUSCIBLE_CONTEST_REMINDER": "PT1S",
            "CRUSCIBLE_LOG_LEVEL": "INFO",
        }
        args = [sys.executable, "-m", "tests.scale.schedule_replica", str(self.out)]
        with (self.root / f"replica-{n}.log").open("wb") as log:
            proc = subprocess.Popen(
                args + (["--crash-on-post"] if crash else []),
                cwd=ROOT,
                env=env,
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(proc)
        return proc

    def tell(self, *procs: subprocess.Popen[bytes], line: str) -> None:
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(f"{line}\n".encode())
            proc.stdin.flush()

    def lines(self) -> list[dict[str, Any]]:
        if not self.out.exists():
            return []
        return [json.loads(line) for line in self.out.read_text().splitlines()]

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted(self.root.glob("replica-*.log"))
        )

    async def until(self, check: Any, what: str, within: float = START_WITHIN_S) -> None:
        deadline = time.monotonic() + within
        while not await check():
            assert time.monotonic() < deadline, f"{what}: not within {within} s\n{self.logs()}"
            await asyncio.sleep(0.1)

    def kill(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait(10)


@pytest.fixture
def replicas(db_url: str, root: Path) -> Iterator[Replicas]:
    started = Replicas(db_url, root)
    try:
        yield started
    finally:
        started.kill()


async def daily_community(app: App, name: str, *, minutes_ago: int) -> Community:
    """A community whose post time (UTC, minute precision) passed ``minutes_ago``."""
    at = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    c = await app.coach.communities.get("test", name, name)
    return await app.coach.communities.configure(
        c.id, channel_id=f"#{name}", post_time=f"{at:%H:%M}", timezone="UTC"
    )


async def firing(app: App, job: str) -> ScheduleFiring:
    async with app.store.session() as s:
        return (await s.scalars(select(ScheduleFiring).where(ScheduleFiring.job == job))).one()


async def test_each_post_and_contest_step_once_across_two_replicas(
    admin: App, replicas: Replicas
) -> None:
    # 1. a replica claims the daily post of "crashed" at its start-up catch-up and dies (-9)
    #    inside the post, before the platform took it; two more load meanwhile
    crashed = await daily_community(admin, "crashed", minutes_ago=10)
    doomed = replicas.start(crash=True)
    one, two = replicas.start(), replicas.start()

    async def died() -> bool:
        return doomed.poll() is not None

    await replicas.until(died, "the crashing replica's post")
    assert doomed.returncode == -signal.SIGKILL
    held = await firing(admin, f"test/daily:{crashed.id}")
    assert held.done_at is None and held.attempts == 1  # claimed, never made

    # 2. the two start their operations together: both catch up "crashed" (its lease ends 3 s
    #    after the claim) and "caught-up", due 10 minutes ago
    caught = await daily_community(admin, "caught-up", minutes_ago=10)

    async def loaded() -> bool:
        return sum(line.get("event") == "loaded" for line in replicas.lines()) == 3

    await replicas.until(loaded, "the replicas' apps")
    replicas.tell(one, two, line="go")

    async def ready() -> bool:
        return sum(line.get("event") == "ready" for line in replicas.lines()) == 2

    await replicas.until(ready, "both replicas started")

    async def posted(c: Community, n: int) -> bool:
        return sum(line.get("community") == c.id for line in replicas.lines()) >= n

    await replicas.until(lambda: posted(crashed, 1), "the taken-over post", within=30)
    await replicas.until(lambda: posted(caught, 1), "the caught-up post", within=30)

    # 3. both schedulers fire the daily job of "caught-up" at the same instant, its post not
    #    made yet (as if the day had just begun), and a contest runs its four steps on both
    async with admin.store.session() as s:
        await s.execute(delete(DailyPost).where(DailyPost.community_id == caught.id))
        await s.execute(
            delete(ScheduleFiring).where(ScheduleFiring.job == f"test/daily:{caught.id}")
        )
    cleared_at = time.time()
    fire_at = cleared_at + 1.5
    starts = datetime.now(UTC) + timedelta(seconds=3)  # planned by the sweep (≤ 1.5 s)
    contest = await admin.coach.contests.create(
        caught, "rate-limiter", starts, starts + timedelta(seconds=2), created_by="admin"
    )
    replicas.tell(one, two, line=f"{caught.id} {fire_at}")

    async def finished() -> bool:
        async with admin.store.session() as s:
            done = await s.get_one(Contest, contest.id, populate_existing=True)
            made = await s.scalar(select(DailyPost).where(DailyPost.community_id == caught.id))
        return done.standings_at is not None and made is not None

    await replicas.until(finished, "the contest's standings and the fired post", within=30)
    await asyncio.sleep(LEASE_S / 2)  # a second post or announcement would show by now
    assert one.poll() is None and two.poll() is None, replicas.logs()

    posts = [line for line in replicas.lines() if "title" in line]
    by_community = Counter(line["community"] for line in posts)
    assert by_community[crashed.id] == 1, posts  # made once, by a survivor
    assert {line["pid"] for line in posts} <= {one.pid, two.pid}
    taken = await firing(admin, f"test/daily:{crashed.id}")
    assert taken.attempts == 2 and taken.done_at is not None  # taken over, then made
    caught_posts = [line for line in posts if line["community"] == caught.id]
    daily = [line for line in caught_posts if line["title"].startswith("Today's challenge")]
    assert [line["at"] < cleared_at for line in daily] == [True, False], daily  # once each time
    steps = Counter(
        "open"
        if "is open" in line["title"]
        else "remind"
        if "closes in" in line["title"]
        else "close"
        if "is closed" in line["title"]
        else "standings"
        for line in caught_posts
        if line["title"].startswith(f"Contest #{contest.id}")
    )
    assert steps == Counter(open=1, remind=1, close=1, standings=1), caught_posts


async def test_a_claim_whose_claimer_died_is_made_by_the_sweep(admin: App) -> None:
    """The lease at work without a restart: a replica's periodic sweep makes the post that a
    dead replica claimed, once the lease has passed — and nothing while it has not."""
    channels = RecordingChannels()
    admin.coach.channels.register("test", channels)
    try:
        c = await daily_community(admin, "swept", minutes_ago=5)
        job, due = f"test/daily:{c.id}", latest_post_time(c, datetime.now(UTC))
        dead = Firings(admin.store, lease=timedelta(seconds=1), owner="dead-replica")
        assert await dead.claim(job, due)
        ops = Operations(admin.coach)  # not started: the sweep is called as its job would
        assert await ops.sweep() == 0 and channels.posts == []  # the lease still runs
        await asyncio.sleep(1.1)
        assert await ops.sweep() == 1
        assert [p.community_id for p in channels.posts] == [c.id]
        row = await firing(admin, job)
        assert (row.attempts, row.owner) == (2, ops.firings.owner) and row.done_at is not None
        assert await ops.sweep() == 0 and len(channels.posts) == 1  # made: never again
    finally:
        admin.coach.channels.unregister("test")
