"""Environments on the job engine: made, torn down and reaped by workers, not front ends.

With a PostgreSQL store (:class:`bot.core.jobs.EngineQueue`), a learner's *Start* reaches a
front end, which records a :class:`~bot.store.models.Provisioning` request, defers a
``provision`` job on the ``environments`` queue and waits for the request to end; a worker
takes the job, makes the environment (servers started on its host, the quota checked there)
and records ``ready`` with its id, or ``failed`` with the reason. The front end then reads the
bundle from the backend, which every role reaches (the ``local`` backend's state in the shared
data directory, or one Docker engine: README, "At scale"), and DMs it. ``env down`` and the
reaper's tick defer ``teardown`` and ``reap`` jobs the same way. Workers take these on a
lane of their own (``LANE_CONCURRENCY`` at once), so a *Start* never waits behind grades.

Delivery is at least once: a worker killed while making an environment leaves its job
stalled; a rescuer retries it and another worker makes it again (what the first left half
made is torn down by the start-up reconciliation of a process over that backend, or the
reaper at its TTL). A front end that stops waiting (``PROVISION_WAIT_S``) before a worker took
the request marks it ``abandoned``, and no worker makes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime

from procrastinate import App, RetryStrategy
from procrastinate.exceptions import AlreadyEnqueued
from sqlalchemy import update

from bot.core.errors import CoachError
from bot.store import Store
from bot.store.models import EnvironmentRecord, Provisioning

log = logging.getLogger(__name__)

ENVIRONMENTS = "environments"  # the queue of provision, teardown and reap jobs (workers)
LANE_CONCURRENCY = 2  # environment jobs at once per worker, beside its grades
PROVISION_WAIT_S = 300.0  # a front end waits this long for a worker to take a request …
MAKE_WAIT_S = 300.0  # … and this long more for the worker to make it
OPEN = ("queued", "making")  # a request nobody has answered yet
TEARDOWN_WAIT_S = 60.0  # ``env down`` waits this long for a worker to destroy it
POLL_S = 0.2

MakeEnvironment = Callable[[int, str], Awaitable[str]]  # (user id, challenge id) -> env id
Destroy = Callable[[str], Awaitable[None]]
Reap = Callable[[], Awaitable[object]]
Clock = Callable[[], datetime]


class EnvironmentJobs:
    """The environment jobs of one process: the front-end side (:meth:`provision`,
    :meth:`teardown`, :meth:`reap`) and the worker side (the jobs' bodies, through ``make``,
    ``destroy``, ``forget`` and ``reap_here``, the coach's own operations)."""

    def __init__(
        self,
        engine: App,
        store: Store,
        *,
        clock: Clock,
        make: MakeEnvironment,
        destroy: Destroy,
        forget: Destroy,
        reap_here: Reap,
        retry: RetryStrategy | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.make = make
        self.destroy = destroy
        self.forget = forget  # record one gone from its backend destroyed
        self.reap_here = reap_here
        self.worker_name = f"{socket.gethostname()}:{os.getpid()}"
        task = engine.task
        self._provision = task(name="provision", queue=ENVIRONMENTS, retry=retry)(
            self._provision_job
        )
        self._teardown = task(name="teardown", queue=ENVIRONMENTS, retry=retry)(self._teardown_job)
        self._reap = task(name="reap", queue=ENVIRONMENTS, retry=retry)(self._reap_job)

    # -- a front end ----------------------------------------------------------------------
    async def provision(self, user_id: int, challenge: str) -> str:
        """Have a worker make an environment of ``challenge`` for the user; its id.

        Raises :class:`~bot.core.errors.CoachError` with the worker's reason (a quota, a
        server that would not start), when no worker took the request within
        ``PROVISION_WAIT_S``, or when the worker making it has not finished within
        ``MAKE_WAIT_S`` more. A request this front end stops waiting for (that, a cancel, a
        store error) is abandoned: no worker makes it later, and one made meanwhile is torn
        down by the worker that made it."""
        async with self.store.session() as s:
            request = Provisioning(user_id=user_id, challenge=challenge, created_at=self.clock())
            s.add(request)
            await s.flush()
            request_id = request.id
        answered = False
        try:
            await self._provision.defer_async(provisioning_id=request_id)
            env_id = await self._wait(request_id)
            answered = True
            return env_id
        finally:
            if not answered:
                with contextlib.suppress(Exception):
                    await self._abandon(request_id)

    async def _wait(self, request_id: int) -> str:
        loop = asyncio.get_running_loop()
        taken_by = loop.time() + PROVISION_WAIT_S
        made_by = taken_by + MAKE_WAIT_S
        while True:
            await asyncio.sleep(POLL_S)
            async with self.store.session() as s:
                request = await s.get_one(Provisioning, request_id, populate_existing=True)
                status, env_id, error = request.status, request.environment, request.error
            if status == "ready" and env_id:
                return env_id
            if status == "failed":
                raise CoachError(error or "the environment could not be made")
            now = loop.time()
            if status == "queued" and now > taken_by:
                raise CoachError(
                    f"no worker took the request within {PROVISION_WAIT_S:.0f} s; is a "
                    "`cruscible worker` running? Try again later"
                )
            if now > made_by:
                raise CoachError(
                    f"the worker making the environment has not finished within "
                    f"{PROVISION_WAIT_S + MAKE_WAIT_S:.0f} s; try again later"
                )

    async def _abandon(self, request_id: int) -> None:
        """Nobody waits for the request any more: ``abandoned`` unless it ended."""
        async with self.store.session() as s:
            await s.execute(
                update(Provisioning)
                .where(Provisioning.id == request_id, Provisioning.status.in_(OPEN))
                .values(status="abandoned", finished_at=self.clock())
            )

    async def teardown(self, env_id: str) -> bool:
        """Have a worker destroy ``env_id``; True once it is, False if no worker did within
        ``TEARDOWN_WAIT_S`` (the job stays queued)."""
        lock = f"teardown-{env_id}"
        with contextlib.suppress(AlreadyEnqueued):
            await self._teardown.configure(queueing_lock=lock).defer_async(env_id=env_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TEARDOWN_WAIT_S
        while loop.time() < deadline:
            await asyncio.sleep(POLL_S)
            async with self.store.session() as s:
                record = await s.get(EnvironmentRecord, env_id, populate_existing=True)
                if record is None or record.destroyed_at is not None:
                    return True
        return False

    async def reap(self) -> None:
        """Have a worker reap expired environments (one reap waits at a time)."""
        with contextlib.suppress(AlreadyEnqueued):
            await self._reap.configure(queueing_lock="reap").defer_async()

    # -- a worker -------------------------------------------------------------------------
    async def _provision_job(self, provisioning_id: int) -> None:
        """Claim the request (an attempt of its own: ``worker`` is this attempt's token), make
        the environment, record it only if the request is still this attempt's; otherwise (the
        front end gave up, a later attempt took over) tear it down. A worker stopping gives the
        request back to the queue."""
        token = f"{self.worker_name}:{uuid.uuid4().hex[:8]}"
        async with self.store.session() as s:
            claimed = await s.execute(
                update(Provisioning)
                .where(
                    Provisioning.id == provisioning_id,
                    # "making": the attempt before this one went silent, or failed on the store
                    Provisioning.status.in_(OPEN),
                )
                .values(status="making", worker=token)
                .returning(Provisioning.user_id, Provisioning.challenge)
            )
            row = claimed.first()
        if row is None:  # abandoned by its front end, or ended
            return
        user_id, challenge = row
        try:
            env_id = await self.make(user_id, challenge)
        except CoachError as exc:
            await self._end(provisioning_id, token, status="failed", error=str(exc))
            return
        except asyncio.CancelledError:  # this worker stops: the request goes back
            with contextlib.suppress(Exception):
                await self._end(provisioning_id, token, status="queued")
                await self._provision.defer_async(provisioning_id=provisioning_id)
            raise
        except Exception as exc:
            log.exception("making an environment for request %d failed", provisioning_id)
            error = f"internal error: {type(exc).__name__}"
            await self._end(provisioning_id, token, status="failed", error=error)
            return
        kept = False
        try:
            kept = await self._end(provisioning_id, token, status="ready", environment=env_id)
        finally:
            if not kept:  # nobody will be told of it: not left to count against the quota
                with contextlib.suppress(Exception):
                    await self.destroy(env_id)

    async def _end(self, provisioning_id: int, token: str, **values: object) -> bool:
        """Record the attempt's outcome if the request is still this attempt's."""
        if values.get("status") != "queued":
            values["finished_at"] = self.clock()
        async with self.store.session() as s:
            done = await s.execute(
                update(Provisioning)
                .where(
                    Provisioning.id == provisioning_id,
                    Provisioning.worker == token,
                    Provisioning.status == "making",
                )
                .values(**values)
            )
            return bool(done.rowcount)  # type: ignore[attr-defined]

    async def _teardown_job(self, env_id: str) -> None:
        """Destroy ``env_id``; one its backend no longer has is recorded destroyed (a retry
        after the store failed, or a reaper was first)."""
        try:
            await self.destroy(env_id)
        except CoachError as exc:
            log.warning("environment %s not destroyed: %s", env_id, exc)
            await self.forget(env_id)

    async def _reap_job(self) -> None:
        await self.reap_here()
