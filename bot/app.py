"""Wires settings, store, catalog, provisioning and grading into a coach."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bot.config import Settings
from bot.logs import SECRETS
from provisioning.backends import make_backend
from provisioning.manager import Provisioner

# The coach, the store, the catalog and the grader are imported when an app opens, not with
# this module: commands that only look at environments start without them.
if TYPE_CHECKING:
    from bot.core.coach import Coach
    from bot.core.grader import Grader
    from bot.scheduler import Operations
    from bot.store import Store
    from challenges.catalog import Catalog
    from grading.urlguard import Policy

log = logging.getLogger(__name__)


@dataclass
class App:
    settings: Settings
    store: Store
    catalog: Catalog
    provisioner: Provisioner
    coach: Coach


def url_policy(settings: Settings) -> Policy:
    """Which grading targets the settings allow (loopback, private ranges)."""
    from grading.urlguard import Policy

    return Policy(
        allow_loopback=settings.allow_loopback_targets,
        allow_private=settings.allow_private_targets,
    )


def make_grader(settings: Settings, provisioner: Provisioner) -> Grader:
    """The grader of this worker: its URL policy and its load-rate policy."""
    from bot.core.calibration import CalibrationStore
    from bot.core.grader import Grader
    from bot.core.scale import LoadScales

    calibrations = CalibrationStore(settings.data_dir, backend=settings.backend)
    scales = LoadScales(settings.grade_rate, calibrations, slots=settings.grading_concurrency)
    return Grader(provisioner, url_policy(settings), scales)


def make_provisioner(settings: Settings) -> Provisioner:
    """The provisioning backend of the settings, with their quotas; nothing else is opened."""
    backend = make_backend(settings.backend, settings.data_dir / "environments")
    return Provisioner(
        backend,
        max_per_owner=settings.max_envs_per_owner,
        max_total=settings.max_envs_total,
        max_ttl=settings.env_max_ttl,
        pool_size=settings.pool_size,
    )


def make_private(path: Path) -> None:
    """Create the data directory with mode 0700 (the store, tokens of chat installations and
    reports are nobody else's); an existing directory keeps the mode its owner gave it."""
    if path.is_dir():
        return
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)  # whatever the umask


class StoreUnavailable(RuntimeError):
    """The store's database cannot be reached or opened: commands end with one ``error:``
    line naming it (password hidden) and the driver's reason."""


async def open_store(settings: Settings) -> Store:
    """The store of ``settings``, migrated to the newest schema.

    Raises :class:`StoreUnavailable` when its database refuses or cannot be reached (a
    PostgreSQL that is down, a wrong password, an SQLite file that cannot be opened).
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import InterfaceError, OperationalError

    from bot.store import Store

    where = make_url(settings.db_url).render_as_string(hide_password=True)
    try:
        store = Store(settings.db_url)
    except OSError as exc:  # an SQLite file's folder that cannot be made
        raise StoreUnavailable(f"cannot open the store {where}: {exc}") from None
    try:
        await store.migrate()
    except (OperationalError, InterfaceError, OSError) as exc:
        await store.close()
        lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        reason = lines[0] if lines else type(exc).__name__
        raise StoreUnavailable(f"cannot open the store {where}: {reason}") from None
    return store


@asynccontextmanager
async def open_app(
    settings: Settings | None = None, *, reconcile: bool = True, catalog: Catalog | None = None
) -> AsyncIterator[App]:
    """Everything the coach needs; on start, tears down environments a crash left behind.

    ``catalog`` is one already loaded (by a command that checked its arguments against it).
    """
    from bot.core.coach import Coach
    from challenges.catalog import Catalog

    settings = settings or Settings()
    make_private(settings.data_dir)
    store = await open_store(settings)
    provisioner = make_provisioner(settings)
    try:
        catalog = catalog or Catalog.load()
        coach = Coach(settings, store, catalog, provisioner, make_grader(settings, provisioner))
        for env in await provisioner.list():
            SECRETS.add(*env.secrets())
        if reconcile:
            gone = await provisioner.reconcile(await coach.known_environment_ids())
            if gone:
                log.warning(
                    "tore down %d environment(s) left behind: %s", len(gone), ", ".join(gone)
                )
        try:
            yield App(settings, store, catalog, provisioner, coach)
        finally:
            await coach.close()
    finally:
        await provisioner.close()
        await store.close()


@asynccontextmanager
async def operations(app: App) -> AsyncIterator[Operations]:
    """A running bot's community operations: the schedules (daily posts, contests, reaper), the
    grading queue resumed from the store, and the warm pool of environments per challenge.
    Register the platform's ``Channels`` first."""
    from bot.scheduler import Operations

    for challenge in app.catalog:  # a no-op unless CRUSCIBLE_POOL_SIZE is set
        app.provisioner.warm(challenge.environment_spec("pool"))
    ops = Operations(app.coach)
    await ops.start()
    try:
        yield ops
    finally:
        await ops.stop()
