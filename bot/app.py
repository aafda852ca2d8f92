"""Wires settings, store, catalog, provisioning and grading into a coach."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from bot.config import Settings
from bot.core.coach import Coach
from bot.core.grader import Grader
from bot.logs import SECRETS
from bot.scheduler import Operations
from bot.store import Store
from challenges.catalog import Catalog
from grading.urlguard import Policy
from provisioning import make_backend
from provisioning.manager import Provisioner

log = logging.getLogger(__name__)


@dataclass
class App:
    settings: Settings
    store: Store
    catalog: Catalog
    provisioner: Provisioner
    coach: Coach


def url_policy(settings: Settings) -> Policy:
    return Policy(
        allow_loopback=settings.allow_loopback_targets,
        allow_private=settings.allow_private_targets,
    )


def make_provisioner(settings: Settings) -> Provisioner:
    backend = make_backend(settings.backend, settings.data_dir / "environments")
    return Provisioner(
        backend,
        max_per_owner=settings.max_envs_per_owner,
        max_total=settings.max_envs_total,
        max_ttl=settings.env_max_ttl,
        pool_size=settings.pool_size,
    )


@asynccontextmanager
async def open_app(
    settings: Settings | None = None, *, reconcile: bool = True
) -> AsyncIterator[App]:
    """Everything the coach needs; on start, tears down environments a crash left behind."""
    settings = settings or Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(settings.db_url)
    await store.migrate()
    provisioner = make_provisioner(settings)
    try:
        catalog = Catalog.load()
        coach = Coach(
            settings, store, catalog, provisioner, Grader(provisioner, url_policy(settings))
        )
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
    for challenge in app.catalog:  # a no-op unless CRUSCIBLE_POOL_SIZE is set
        app.provisioner.warm(challenge.environment_spec("pool"))
    ops = Operations(app.coach)
    await ops.start()
    try:
        yield ops
    finally:
        await ops.stop()
