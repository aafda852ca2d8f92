"""Settings, from environment variables prefixed ``CRUSCIBLE_``."""

from __future__ import annotations

import os
import pwd
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SYSTEM_DATA_DIR = Path("/var/lib/cruscible")


def _home() -> Path | None:
    """The user's home: ``$HOME`` when set and absolute, else the password database's entry."""
    home = os.environ.get("HOME", "")
    if os.path.isabs(home):
        return Path(home)
    try:
        return Path(pwd.getpwuid(os.getuid()).pw_dir)
    except KeyError:  # a uid without an entry (containers started with --user N)
        return None


def default_data_dir(euid: int | None = None) -> Path:
    """Where the store, environments and reports go when ``CRUSCIBLE_DATA_DIR`` is not set.

    - root: ``/var/lib/cruscible``, the FHS place for a system service's state
      (https://refspecs.linuxfoundation.org/FHS_3.0/fhs/ch05s08.html), not root's home:
      that is private (mode 0700 on Debian) and servers run as the ``cruscible`` system user.
      The data directory itself is made private too; the servers' directories go where that
      user can reach them (``provisioning.local.layout``).
    - anyone else: ``$XDG_DATA_HOME/cruscible`` when ``XDG_DATA_HOME`` is an absolute path,
      else ``~/.local/share/cruscible``, as the XDG Base Directory specification says
      (https://specifications.freedesktop.org/basedir-spec/latest/); the home comes from
      ``$HOME``, else from the password database. With neither, a private
      ``cruscible-<uid>`` folder in the temporary directory.
    """
    if (os.geteuid() if euid is None else euid) == 0:
        return SYSTEM_DATA_DIR
    xdg = os.environ.get("XDG_DATA_HOME", "")
    if os.path.isabs(xdg):
        return Path(xdg) / "cruscible"
    home = _home()
    if home is not None:
        return home / ".local" / "share" / "cruscible"
    return Path(tempfile.gettempdir()) / f"cruscible-{os.getuid()}"


def _default_grading_concurrency() -> int:
    """A grade runs load and faults on this machine: one per two cores, 1 to 4."""
    return max(1, min(4, (os.cpu_count() or 2) // 2))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CRUSCIBLE_", extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: str | None = None  # default: SQLite in data_dir
    backend: str = "local"
    env_ttl: timedelta = timedelta(hours=2)
    env_max_ttl: timedelta = timedelta(hours=8)
    env_extend_by: timedelta = timedelta(hours=1)
    max_envs_per_owner: int = 2
    max_envs_total: int = 50
    pool_size: int = 0  # environments kept ready per challenge by a running bot (0: none)
    allow_loopback_targets: bool = True
    allow_private_targets: bool = False
    log_level: str = "WARNING"
    # community operations
    grading_concurrency: int = Field(default_factory=_default_grading_concurrency, ge=1)
    grading_max_attempts: int = Field(2, ge=1)  # starts of one grade before it is given up
    # the load rate of a grade: measured (stated scale if this host sustains it, see
    # `cruscible challenges calibrate`), stated, or floor (grading.rate); bot.core.scale
    grade_rate: Literal["measured", "stated", "floor"] = "measured"
    queue_limit: int = Field(
        100, ge=0
    )  # grades waiting at most; beyond, "busy, try at …" (0: no bound)
    # the job engine (a PostgreSQL store): `cruscible worker` processes grade, see bot.core.jobs
    worker_heartbeat: timedelta = timedelta(seconds=10)  # a worker says it is alive this often
    worker_stalled_after: timedelta = timedelta(seconds=30)  # silent this long: its jobs restart
    commands_per_minute: float = 30.0  # per learner, sustained (0: no limit)
    command_burst: int = 20  # per learner, at once
    daily_grace: timedelta = timedelta(hours=3)  # a missed daily post is made this late
    contest_reminder: timedelta = timedelta(hours=24)  # before a contest closes
    env_warn_before: timedelta = timedelta(minutes=15)  # expiry warning by DM
    reap_every: timedelta = timedelta(minutes=1)
    # a scheduled firing (daily post, contest step) claimed by a replica that then died is
    # made by another once this lease has passed (bot.core.firings)
    schedule_lease: timedelta = timedelta(minutes=5)
    leaderboard_refresh: timedelta = timedelta(seconds=10)  # edits of a board, at most
    # environments reachable from elsewhere (provisioning.tls reads the same variables):
    # set public_host and every resource listens on listen_host, TLS only
    public_host: str | None = None  # the name or address learners' clients use
    listen_host: str = "0.0.0.0"  # the address servers bind when public_host is set
    tls_cert: Path | None = None  # PEM; unset: a certificate from Cruscible's own CA
    tls_key: Path | None = None  # PEM, with tls_cert
    tls_ca: Path | None = None  # the CA that signed tls_cert, if not a publicly trusted one

    @field_validator("data_dir")
    @classmethod
    def _expand_home(cls, path: Path) -> Path:
        """``~/x`` from a unit file or a .env (no shell expanded it) means the home's ``x``."""
        return path.expanduser() if str(path).startswith("~") else path

    @field_validator("database_url")
    @classmethod
    def _a_store_url(cls, url: str | None) -> str | None:
        """Blank is unset (SQLite in data_dir); otherwise an SQLAlchemy URL of SQLite or
        PostgreSQL (https://docs.sqlalchemy.org/en/20/core/engines.html#database-urls)."""
        if not url or not url.strip():
            return None
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            dialect = make_url(url.strip()).get_backend_name()
        except ArgumentError:
            raise ValueError("not a database URL (e.g. postgresql+psycopg://…)") from None
        if dialect not in {"sqlite", "postgresql"}:
            raise ValueError(f"{dialect!r} is not a store: use postgresql+psycopg://… or sqlite")
        return url.strip()

    @field_validator("worker_heartbeat")
    @classmethod
    def _positive(cls, every: timedelta) -> timedelta:
        """A heartbeat of zero or less would write to the store without a pause."""
        if every <= timedelta(0):
            raise ValueError("must be longer than zero")
        return every

    @model_validator(mode="after")
    def _stalled_after_heartbeats(self) -> Settings:
        """A worker is silent for up to one heartbeat between two: marked dead sooner than two,
        every live worker's grades would restart elsewhere (README, "At scale")."""
        if self.worker_stalled_after < 2 * self.worker_heartbeat:
            raise ValueError(
                f"CRUSCIBLE_WORKER_STALLED_AFTER ({self.worker_stalled_after}) must be at least "
                f"two CRUSCIBLE_WORKER_HEARTBEAT ({self.worker_heartbeat}): a live worker would "
                "be taken for dead"
            )
        return self

    @field_validator("public_host")
    @classmethod
    def _nameable(cls, host: str | None) -> str | None:
        """Blank is unset; otherwise a host clients can name (provisioning.tls.check_public_host
        says which and why)."""
        from provisioning.tls import check_public_host

        return check_public_host(host) if host and host.strip() else None

    @field_validator("listen_host")
    @classmethod
    def _an_address(cls, host: str) -> str:
        """An IP address to bind (provisioning.tls.check_listen_host)."""
        from provisioning.tls import check_listen_host

        return check_listen_host(host)

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir / 'cruscible.db'}"

    @property
    def uses_job_engine(self) -> bool:
        """A PostgreSQL store: grades and publications are jobs of the engine (procrastinate),
        taken by any number of workers and front ends; SQLite: one process does everything."""
        return self.db_url.split("+", 1)[0].split(":", 1)[0] in {"postgresql", "postgres"}

    @property
    def scheduler_url(self) -> str:
        """The database of APScheduler's persistent job store (the SQLite store's one process):
        a file of its own beside the store's. APScheduler 3's job store is synchronous and
        writes from the event loop; in the store's file it would wait on the write lock of an
        async transaction that cannot finish while the loop waits ("database is locked")."""
        return f"sqlite:///{self.data_dir / 'scheduler.db'}"

    @property
    def reports_dir(self) -> Path:
        return self.data_dir / "reports"
