"""Test adapters of the coach core for community operations: a recording ``Channels``, a
controlled clock, a grader stand-in, and a coach built over a data directory."""

from __future__ import annotations

import asyncio
import itertools
import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bot.app import make_provisioner
from bot.config import Settings
from bot.core.channels import MessageGone
from bot.core.coach import Coach
from bot.core.grader import Graded
from bot.core.hosted import HostedError
from bot.core.message import Message
from bot.core.outbox import Actor, DeliveryFailed, DirectMessageClosed
from bot.store import Community, Store, Submission
from challenges.catalog import Catalog
from grading.report import LoadScale, Report
from grading.runner import CannotGrade
from provisioning.hosted import logs as hosted_logs
from provisioning.hosted.submission import RECORDS


async def until(predicate: Callable[[], object], within: float = 5.0) -> None:
    """Wait for a condition on state the test does not own (a queue, a background task)."""
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


@dataclass
class Posted:
    community_id: int
    channel_id: str
    thread: str | None
    ping: bool
    message: Message
    ref: str


@dataclass
class RecordingChannels:
    """Records what the scheduler and the queue sent where; ``crash_next`` fails one post;
    ``refuse[kind]`` (``post``, ``thread``, ``dm``) refuses every such call with that failure."""

    posts: list[Posted] = field(default_factory=list)
    edits: list[tuple[str, Message]] = field(default_factory=list)
    dms: list[tuple[str, Message]] = field(default_factory=list)
    gone: set[str] = field(default_factory=set)
    dms_closed: bool = False
    crash_next: bool = False
    refuse: dict[str, DeliveryFailed] = field(default_factory=dict)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    async def post(
        self,
        community: Community,
        message: Message,
        *,
        channel_id: str | None = None,
        thread: str | None = None,
        ping: bool = False,
    ) -> str:
        if self.crash_next:
            self.crash_next = False
            raise ConnectionError("the platform did not answer")
        kind = "post" if thread is None else "thread"
        if kind in self.refuse:
            raise self.refuse[kind]
        channel = channel_id or community.channel_id or "?"
        ref = f"{channel}/{next(self._ids)}"
        self.posts.append(Posted(community.id, channel, thread, ping, message, ref))
        return ref

    async def edit(self, community: Community, ref: str, message: Message) -> None:
        if ref in self.gone:
            raise MessageGone(ref)
        self.edits.append((ref, message))

    async def dm(self, community: Community | None, user_id: str, message: Message) -> str:
        if self.dms_closed:
            raise DirectMessageClosed(user_id)
        if "dm" in self.refuse:
            raise self.refuse["dm"]
        self.dms.append((user_id, message))
        return f"dm/{next(self._ids)}"

    def titles(self) -> list[str]:
        return [p.message.title for p in self.posts]


@dataclass
class Clock:
    """The time every component of the coach reads; the test moves it."""

    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass
class ScriptedGrader:
    """Stands in for the grader where grading is not the point: the report scores what
    ``scores`` names for the URL; a URL with a closed gate grades until the test opens it."""

    scores: dict[str, int] = field(default_factory=dict)
    gates: dict[str, asyncio.Event] = field(default_factory=dict)
    refuse: set[str] = field(default_factory=set)
    started: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    scales: list[LoadScale | None] = field(default_factory=list)  # as each grade was asked

    def gate(self, url: str) -> asyncio.Event:
        return self.gates.setdefault(url, asyncio.Event())

    async def grade(
        self,
        challenge: Any,
        url: str,
        out_dir: Path,
        *,
        seed: int,
        env: Any = None,
        progress=None,  # type: ignore[no-untyped-def]
        scale: LoadScale | None = None,
    ) -> Graded:
        self.started.append(url)
        self.scales.append(scale)
        if progress is not None:
            progress("contract", 0.5)
        try:
            if url in self.gates:
                await self.gates[url].wait()
        except asyncio.CancelledError:
            self.cancelled.append(url)
            raise
        if url in self.refuse:
            raise CannotGrade(f"GET {url}/healthz did not answer 200")
        score = self.scores.get(url, 50)
        report = Report(
            challenge=challenge.id,
            target=url,
            environment=None,
            seed=seed,
            score=score,
            passed=score >= 70,
            discussion="What the design paid for its choice.",
        )
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "report.json"
        path.write_text(report.to_json())
        return Graded(report, out_dir, [path])


@dataclass
class ScriptedBuild:
    """What :class:`ScriptedHosted` prepared: the hosted submission's id and source."""

    id: str
    source: str
    status: str = "built"

    def update(self, **fields: Any) -> None:
        self.status = fields.get("status", self.status)

    async def cleanup(self) -> None:
        self.status = "cleaned"


@dataclass
class ScriptedHosted:
    """Stands in for ``bot.core.hosted.HostedGrader`` where building and running code is not
    the point: a source in ``broken_builds`` fails to build, in ``broken_starts`` fails to start
    (with that log text, as ``HostedError`` carries it), in ``crashes`` grades with a process
    that stopped during the grade; otherwise ``grader`` grades the source as if it were the URL.
    With ``data_dir``, each submission's record keeps ``logs`` (file name -> raw text) masked
    with ``secrets``, as the real pipeline keeps them."""

    grader: ScriptedGrader
    broken_builds: dict[str, str] = field(default_factory=dict)
    broken_starts: dict[str, str] = field(default_factory=dict)
    crashes: dict[str, str] = field(default_factory=dict)
    prepared: list[str] = field(default_factory=list)
    received: dict[str, bytes] = field(default_factory=dict)
    data_dir: Path | None = None
    logs: dict[str, str] = field(default_factory=dict)
    secrets: tuple[str, ...] = ()
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def _keep_logs(self, sub_id: str) -> None:
        if self.data_dir is None:
            return
        record = self.data_dir / RECORDS / sub_id
        shutil.rmtree(record, ignore_errors=True)  # ids restart per script: a fresh record
        folder = record / "logs"
        folder.mkdir(parents=True)
        for name, text in self.logs.items():
            (folder / name).write_text(hosted_logs.mask(text, self.secrets))

    async def prepare(self, source: Any, challenge: Any, *, scope: str = "", say: Any = None):  # type: ignore[no-untyped-def]
        self.prepared.append(str(source))
        if Path(source).is_file():  # an archive the learner attached: what reached the builder
            self.received[str(source)] = Path(source).read_bytes()
        sub_id = f"sub-{next(self._ids)}"
        self._keep_logs(sub_id)
        if source in self.broken_builds:
            raise HostedError(self.broken_builds[source], sub_id)
        return ScriptedBuild(sub_id, str(source)), None

    async def grade_prepared(  # type: ignore[no-untyped-def]
        self, sub: ScriptedBuild, built: Any, challenge: Any, env: Any, *, seed: int,
        out_dir: Path, progress: Any = None, say: Any = None, scale: Any = None, **_: Any,
    ):  # fmt: skip
        if sub.source in self.broken_starts:
            raise HostedError(self.broken_starts[sub.source], sub.id)
        graded = await self.grader.grade(
            challenge, sub.source, out_dir, seed=seed, progress=progress, scale=scale
        )
        crashed = [sub.source] if sub.source in self.crashes else []
        return SimpleNamespace(
            submission=sub,
            graded=graded,
            crashed=crashed,
            crash_report=self.crashes.get(sub.source, ""),
            service=None,
        )


class AnySource(dict):  # type: ignore[type-arg]
    """A :class:`ScriptedHosted` script that applies to any source (a stored archive's path is
    random): ``ScriptedHosted(g, broken_builds=AnySource("log text"))``."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def __contains__(self, key: object) -> bool:
        return True

    def __getitem__(self, key: object) -> str:
        return self.text

    def get(self, key: object, default: object = None) -> str:  # type: ignore[override]
        return self.text


def scripted_hosting(coach: Coach, hosted: ScriptedHosted) -> None:
    """Code on ``coach`` runs through ``hosted``, next to no environment (none is made)."""

    @asynccontextmanager
    async def no_environment(
        sub: Any, challenge: Any, env: Any, *, keep: bool = False
    ) -> AsyncIterator[None]:
        yield None

    coach.hosted = hosted  # type: ignore[assignment]
    coach.code_environment = no_environment  # type: ignore[method-assign,assignment]


_catalog: Catalog | None = None


def catalog() -> Catalog:
    global _catalog
    if _catalog is None:
        _catalog = Catalog.load()
    return _catalog


def settings_for(data_dir: Path, **overrides: Any) -> Settings:
    data_dir.chmod(0o755)  # the local backend's servers run unprivileged
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "grading_concurrency": 1,
        "leaderboard_refresh": timedelta(0),
    }
    return Settings(**(values | overrides))


@asynccontextmanager
async def coach_over(
    data_dir: Path,
    *,
    clock: Clock,
    grader: ScriptedGrader | None = None,
    channels: RecordingChannels | None = None,
    **settings: Any,
) -> AsyncIterator[Coach]:
    """A coach over ``data_dir`` (a real SQLite store, migrated), wired like ``open_app``;
    opening a second one over the same directory is a restart."""
    config = settings_for(data_dir, **settings)
    store = Store(config.db_url)
    await store.migrate()
    provisioner = make_provisioner(config)
    coach = Coach(config, store, catalog(), provisioner, grader or ScriptedGrader(), clock=clock)  # type: ignore[arg-type]
    if channels is not None:
        coach.channels.register("test", channels)
    try:
        yield coach
    finally:
        await coach.close()
        await provisioner.close()
        await store.close()


async def community(
    coach: Coach, *, tz: str = "UTC", at: str = "09:00", name: str = "c"
) -> Community:
    c = await coach.communities.get("test", name, name)
    return await coach.communities.configure(c.id, channel_id=f"#{name}", post_time=at, timezone=tz)


async def record(
    coach: Coach,
    actor: Actor,
    score: int | None,
    at: datetime,
    *,
    where: Community | None = None,
    challenge: str = "rate-limiter",
    status: str = "done",
) -> Submission:
    """A submission as a finished grade leaves it (grading is not the point)."""
    user = await coach.user(actor)
    async with coach.store.session() as s:
        sub = Submission(
            user_id=user.id,
            challenge=challenge,
            url=f"http://127.0.0.1:9/{actor.name}",
            seed=0,
            status=status,
            score=score,
            passed=None if score is None else score >= 70,
            community_id=where.id if where else None,
            created_at=at,
            finished_at=at if status == "done" else None,
        )
        s.add(sub)
    return sub
