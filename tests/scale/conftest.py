"""Scale-out fixtures: a real PostgreSQL (one fresh database per test), worker processes
(``tests.scale.node``: ``cruscible worker``'s code with a short probing grade), chat front ends
over the same database in this process, and the service the grades probe.

Every server listens on 127.0.0.1; every process started is killed and reaped at the end."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from aiohttp import web

from bot.app import App, open_app
from bot.config import Settings
from bot.core.message import Message
from bot.core.outbox import Actor
from provisioning.local import processes
from tests.community.support import RecordingChannels
from tests.e2e.newcomer import servers_of
from tests.grading.realservers import Postgres, postgres_server

ROOT = Path(__file__).resolve().parents[2]
HEARTBEAT_S = 0.5  # workers say they are alive this often …
STALLED_AFTER_S = 4.0  # … and are trusted this long after they went silent
READY = "Starting worker on queues grading"  # procrastinate's log line, at INFO
_dbs = itertools.count(1)


async def until(predicate: Callable[[], object], within: float = 20.0, every: float = 0.05) -> None:
    """Wait (bounded) for state another process changes."""
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(every)


@pytest.fixture(scope="session")
def pg() -> Iterator[Postgres]:
    with postgres_server() as server:
        yield server


@pytest.fixture
def db_url(pg: Postgres) -> str:
    """A fresh database of the server, as the store's URL."""
    name = f"scale_{os.getpid()}_{next(_dbs)}"
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return pg.dsn.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}"


def scale_env(db_url: str, data_dir: Path) -> dict[str, str]:
    """The ``CRUSCIBLE_*`` settings every process of a test shares (its own data dir)."""
    return {
        "CRUSCIBLE_DATABASE_URL": db_url,
        "CRUSCIBLE_DATA_DIR": str(data_dir),
        "CRUSCIBLE_WORKER_HEARTBEAT": f"PT{HEARTBEAT_S}S",
        "CRUSCIBLE_WORKER_STALLED_AFTER": f"PT{STALLED_AFTER_S}S",
        "CRUSCIBLE_LOG_LEVEL": "INFO",
    }


@dataclass
class Workers:
    """Worker processes over one database; each logs to its own file."""

    db_url: str
    root: Path
    procs: list[subprocess.Popen] = field(default_factory=list)

    def start(
        self, concurrency: int = 1, argv: list[str] | None = None, data_dir: Path | None = None
    ) -> subprocess.Popen:
        """A worker process: ``tests.scale.node`` unless ``argv`` names another command; its
        own data directory unless ``data_dir`` names one to share (a front end's)."""
        n = len(self.procs)
        data = data_dir or self.root / f"worker-{n}"
        data.mkdir(mode=0o755, exist_ok=data_dir is not None)
        env = {**os.environ, **scale_env(self.db_url, data)}
        log = (self.root / f"worker-{n}.log").open("wb")
        proc = subprocess.Popen(
            argv or [sys.executable, "-m", "tests.scale.node", "--concurrency", str(concurrency)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.procs.append(proc)
        return proc

    async def registered(self, n: int, within: float = 30.0) -> None:
        """Wait until ``n`` of the workers started and alive take grading jobs (each says so
        in its log: procrastinate's "Starting worker on queues grading"; front ends' own
        workers over the same database are not counted)."""
        async with asyncio.timeout(within):
            while True:
                for proc in self.procs:  # none failed (a kill -9 is the caller's)
                    assert proc.poll() in (None, -signal.SIGKILL), self.logs()
                ready = sum(
                    1
                    for i, proc in enumerate(self.procs)
                    if proc.poll() is None
                    and READY in (self.root / f"worker-{i}.log").read_text(errors="replace")
                )
                if ready >= n:
                    return
                await asyncio.sleep(0.1)

    def log_of(self, proc: subprocess.Popen) -> str:
        """What worker ``proc`` has logged so far."""
        return (self.root / f"worker-{self.procs.index(proc)}.log").read_text(errors="replace")

    def by_pid(self, pid: int) -> subprocess.Popen:
        return next(p for p in self.procs if p.pid == pid)

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted(self.root.glob("worker-*.log"))
        )

    def stop(self) -> None:
        """Kill every worker, then every environment server a worker or front end of the test
        started (a replica killed mid-test leaves its environments running, as it would in
        production until another replica reaps them at their TTL)."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        for data in self.root.iterdir():
            if (data / "environments").is_dir():
                servers = servers_of(data, root=os.geteuid() == 0)
                processes.signal_groups(processes.scan(servers), signal.SIGKILL)


@pytest.fixture
def workers(db_url: str) -> Iterator[Workers]:
    root = Path(tempfile.mkdtemp(prefix="cruscible-scale-"))
    root.chmod(0o755)
    pool = Workers(db_url, root)
    try:
        yield pool
    finally:
        pool.stop()
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class Probed:
    """What the grades sent to the probed service: hits per tag, which worker pids, and the
    tags in the order their grades first probed (the start order)."""

    hits: Counter[str] = field(default_factory=Counter)
    order: list[str] = field(default_factory=list)
    pids: defaultdict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    port: int = 0

    def url(self, seconds: float, tag: str) -> str:
        return f"http://127.0.0.1:{self.port}/{seconds}/{tag}"


@pytest.fixture
async def probed() -> AsyncIterator[Probed]:
    seen = Probed()

    async def probe(request: web.Request) -> web.Response:
        tag = request.match_info["tag"]
        if not seen.hits[tag]:
            seen.order.append(tag)
        seen.hits[tag] += 1
        pid = int(request.headers.get("X-Worker", "0"))
        if not seen.pids[tag] or seen.pids[tag][-1] != pid:
            seen.pids[tag].append(pid)
        return web.Response(text="ok")

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    server = web.Application()
    server.router.add_get("/{seconds}/{tag}/probe", probe)
    server.router.add_get("/{seconds}/{tag}/healthz", healthz)
    runner = web.AppRunner(server, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    seen.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield seen
    finally:
        await runner.cleanup()


@dataclass
class RecordingOutbox:
    """One learner's interaction: replies, edits of them, channel posts and DMs, in order."""

    posts: list[Message] = field(default_factory=list)
    edits: list[tuple[str, Message]] = field(default_factory=list)
    replies: list[Message] = field(default_factory=list)
    dms: list[Message] = field(default_factory=list)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    async def post(self, msg: Message, *, thread: str | None = None) -> str:
        self.posts.append(msg)
        return f"post/{next(self._ids)}"

    async def reply(self, msg: Message) -> str:
        self.replies.append(msg)
        return f"reply/{next(self._ids)}"

    async def edit(self, ref: str, msg: Message) -> None:
        self.edits.append((ref, msg))

    async def dm(self, actor: Actor, msg: Message) -> str:
        self.dms.append(msg)
        return f"dm/{next(self._ids)}"

    def shown(self) -> list[str]:
        """Every text the progress message showed (its first reply, then each edit)."""
        return [f"{m.title}: {m.body}" for m in self.replies + [m for _, m in self.edits]]


@asynccontextmanager
async def front_end(db_url: str, root: Path, **overrides: object) -> AsyncIterator[App]:
    """A chat front end (what ``cruscible run`` opens) over the shared database, in this
    process: its own data directory, the console platform's channels recorded."""
    data = Path(tempfile.mkdtemp(prefix="front-", dir=root))
    data.chmod(0o755)
    env = scale_env(db_url, data)
    settings = Settings(
        database_url=env["CRUSCIBLE_DATABASE_URL"],
        data_dir=data,
        worker_heartbeat=HEARTBEAT_S,
        worker_stalled_after=STALLED_AFTER_S,
        **overrides,
    )
    async with open_app(settings, reconcile=False) as app:
        app.coach.channels.register("console", RecordingChannels())
        await app.coach.queue.resume()
        yield app
