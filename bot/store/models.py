"""Tables: learners, their environments, submissions (the grading queue), communities,
daily posts, contests and self-updating leaderboard messages."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every database (SQLite stores them without a zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime()}


class User(Base):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("platform", "platform_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    platform: Mapped[str] = mapped_column(String(16))  # console | discord | slack
    platform_id: Mapped[str] = mapped_column(String(64))
    display_name: Mapped[str] = mapped_column(String(100))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    public: Mapped[bool] = mapped_column(Boolean, default=True)  # shown on public boards
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class EnvironmentRecord(Base):
    __tablename__ = "environments"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    challenge: Mapped[str] = mapped_column(String(64))
    backend: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    destroyed_at: Mapped[datetime | None] = mapped_column(default=None)
    warned_at: Mapped[datetime | None] = mapped_column(default=None)  # expiry warning sent


class Provisioning(Base):
    """An environment asked for through a front end and made by a worker (the job engine):
    ``queued`` → ``making`` (a worker took it) → ``ready`` (``environment`` set) or
    ``failed`` (``error``); ``abandoned`` when the front end stopped waiting before a worker
    took it (then no worker makes it)."""

    __tablename__ = "provisionings"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    challenge: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    environment: Mapped[str | None] = mapped_column(String(32), default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    worker: Mapped[str | None] = mapped_column(String(128), default=None)  # host:pid
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)


ACTIVE = ("queued", "running")  # a learner has at most one submission in these states


class Submission(Base):
    """A submission and its grade; ``status`` is the persistent grading queue:
    queued → running → done | error | cancelled.

    ``kind`` ``url``: ``url`` is the learner's running service. ``code``: ``source`` is a
    public git URL or an archive stored under the data directory until graded (so a restart
    resumes it); the code was built and run by us (``hosted``: on the same caps as everyone)
    and ``logs_ref`` is its hosted submission id (``cruscible logs``); ``keep``: the learner
    asked that it keep running after the grade, until the environment's TTL or teardown."""

    __tablename__ = "submissions"
    __table_args__ = (
        Index(
            "one_active_submission_per_user",
            "user_id",
            unique=True,
            sqlite_where=text("status IN ('queued', 'running')"),
            postgresql_where=text("status IN ('queued', 'running')"),
        ),
        Index("submissions_by_status", "status", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    challenge: Mapped[str] = mapped_column(String(64))
    url: Mapped[str] = mapped_column(String(2048))
    environment: Mapped[str | None] = mapped_column(String(32), default=None)
    seed: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    score: Mapped[int | None] = mapped_column(default=None)
    passed: Mapped[bool | None] = mapped_column(default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    report: Mapped[dict | None] = mapped_column(JSON, default=None)
    report_dir: Mapped[str | None] = mapped_column(String(1024), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    community_id: Mapped[int | None] = mapped_column(ForeignKey("communities.id"), default=None)
    thread: Mapped[str | None] = mapped_column(String(128), default=None)  # post results under
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # times a worker started it
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    kind: Mapped[str] = mapped_column(String(8), default="url")  # url | code
    source: Mapped[str | None] = mapped_column(String(2048), default=None)
    hosted: Mapped[bool] = mapped_column(Boolean, default=False)
    logs_ref: Mapped[str | None] = mapped_column(String(64), default=None)
    keep: Mapped[bool] = mapped_column(Boolean, default=False)
    # how far a grade got (grading.runner.PHASES, 0..1 of that phase), for a front end to show
    phase: Mapped[str | None] = mapped_column(String(32), default=None)
    phase_done: Mapped[float | None] = mapped_column(Float, default=None)
    # its place in the fair order across communities (bot.core.queue.next_turn)
    turn: Mapped[int | None] = mapped_column(Integer, default=None)
    # the engine job grading it (a worker's claim step chooses the submission: bot.core.jobs)
    job_id: Mapped[int | None] = mapped_column(BigInteger, default=None)
    # the front end whose progress message the learner watches, until it shows the end; a
    # replica that finished it in that front end's place says why here
    progress_holder: Mapped[str | None] = mapped_column(String(64), default=None)
    progress_note: Mapped[str | None] = mapped_column(Text, default=None)


class Community(Base):
    """A Discord guild, a Slack workspace or the console: where the coach posts, and when."""

    __tablename__ = "communities"
    __table_args__ = (UniqueConstraint("platform", "platform_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    platform: Mapped[str] = mapped_column(String(16))
    platform_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(100), default="")
    channel_id: Mapped[str | None] = mapped_column(String(64), default=None)
    post_time: Mapped[str] = mapped_column(String(5), default="09:00")  # HH:MM local
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    ping_role: Mapped[str | None] = mapped_column(String(64), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DailyPost(Base):
    """One daily post made in a community; unique per local day so none is made twice."""

    __tablename__ = "daily_posts"
    __table_args__ = (UniqueConstraint("community_id", "day"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    community_id: Mapped[int] = mapped_column(ForeignKey("communities.id"))
    day: Mapped[str] = mapped_column(String(10))  # YYYY-MM-DD in the community's timezone
    challenge: Mapped[str] = mapped_column(String(64))
    channel_id: Mapped[str] = mapped_column(String(64))
    message_ref: Mapped[str | None] = mapped_column(String(128), default=None)
    posted_at: Mapped[datetime] = mapped_column(default=utcnow)


class Contest(Base):
    """A weekly contest in a community: one challenge, a window, announcements made once each."""

    __tablename__ = "contests"

    id: Mapped[int] = mapped_column(primary_key=True)
    community_id: Mapped[int] = mapped_column(ForeignKey("communities.id"))
    challenge: Mapped[str] = mapped_column(String(64))
    channel_id: Mapped[str] = mapped_column(String(64))
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    opened_at: Mapped[datetime | None] = mapped_column(default=None)
    reminded_at: Mapped[datetime | None] = mapped_column(default=None)
    closed_at: Mapped[datetime | None] = mapped_column(default=None)
    standings_at: Mapped[datetime | None] = mapped_column(default=None)  # final standings posted
    cancelled_at: Mapped[datetime | None] = mapped_column(default=None)
    hosted_only: Mapped[bool] = mapped_column(Boolean, default=False)  # only hosted code ranks


class LeaderboardMessage(Base):
    """The one self-updating leaderboard message of a channel: posted once, then edited."""

    __tablename__ = "leaderboard_messages"
    __table_args__ = (UniqueConstraint("community_id", "channel_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    community_id: Mapped[int] = mapped_column(ForeignKey("communities.id"))
    channel_id: Mapped[str] = mapped_column(String(64))
    scope: Mapped[str] = mapped_column(String(80))  # all | challenge:<id> | contest:<id>
    message_ref: Mapped[str | None] = mapped_column(String(128), default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Publication(Base):
    """What is left to publish of one finished grade, so that a failed post is retried later and
    a restart loses nothing. ``status``: pending (a step failed for a while: ``next_attempt_at``)
    → published (every step delivered, or gone the next route that worked) | abandoned (retries
    exhausted; the learner's ``note`` is kept for ``results``).

    A step's ref is None while still to do, the platform ref once delivered, ``"skipped"`` when
    its route is refused for good (the reason is in ``channel_error``), ``"noted"`` for a private
    report no route reached (the outcome is in ``note``)."""

    __tablename__ = "publications"
    __table_args__ = (Index("publications_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    submission_id: Mapped[int] = mapped_column(ForeignKey("submissions.id"), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    card_ref: Mapped[str | None] = mapped_column(String(128), default=None)
    discussion_ref: Mapped[str | None] = mapped_column(String(128), default=None)
    report_ref: Mapped[str | None] = mapped_column(String(128), default=None)
    channel_error: Mapped[str | None] = mapped_column(Text, default=None)  # why not in the channel
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    note: Mapped[str | None] = mapped_column(Text, default=None)  # shown by `results`
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class ScheduleFiring(Base):
    """One firing of a schedule (a daily post, a contest announcement, a periodic tick), claimed
    by the one process that makes it: unique per (job, fire time), so replicas whose own
    schedulers all fire it run it once. A claim holds a lease: a claimer that dies before
    ``done_at`` leaves it to another process once ``lease_until`` has passed
    (``bot.core.firings``)."""

    __tablename__ = "schedule_firings"
    __table_args__ = (
        UniqueConstraint("job", "fire_at"),
        Index("schedule_firings_open", "done_at", "lease_until"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    job: Mapped[str] = mapped_column(String(128))  # <platforms>/<kind>:<ids>
    fire_at: Mapped[datetime]  # the scheduled time this firing stands for
    owner: Mapped[str] = mapped_column(String(64))  # the claiming process
    claimed_at: Mapped[datetime]
    lease_until: Mapped[datetime]
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    done_at: Mapped[datetime | None] = mapped_column(default=None)
