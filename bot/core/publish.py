"""Publishing a finished grade: one route for the interactive path and the resumed one.

A grade that finished stays finished: whatever the platform refuses while its results are
published, the submission keeps status ``done`` (its score counts on boards and contests), and
the learner gets the outcome by the next route that works:

1. the score card and the discussion in the thread under the day's post, else in the channel;
2. the full report by DM — saying why the channel post failed, when it did — else in a reply
   only the learner sees (the interaction's), else a note kept for ``results``.

What remains to publish lives in the store (:class:`bot.store.Publication`): a transient refusal
(:class:`~bot.core.outbox.DeliveryFailed` with ``transient``: a 429 after the client's retries,
a 5xx) leaves the step pending, and :meth:`Publisher.retry_due` (a scheduled job) publishes it
later through the platform's :class:`~bot.core.channels.Channels`; a permanent refusal moves on
to the next route at once. Adapters raise ``DeliveryFailed`` (never platform exceptions) with a
reason an admin can act on.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Protocol

from sqlalchemy import select

from bot.core import views
from bot.core.channels import ChannelRegistry, Channels
from bot.core.clock import Clock, utcnow
from bot.core.grader import Graded
from bot.core.message import Message
from bot.core.outbox import Actor, DeliveryFailed, InteractionExpired, Outbox
from bot.store import Community, Publication, Store, Submission, User
from grading.render import render_markdown
from grading.report import Report

log = logging.getLogger(__name__)

SKIPPED = "skipped"  # a step whose route was refused for good (the reason is kept)
NOTED = "noted"  # a private report no route reached: the note is shown by `results`
LEASE = timedelta(minutes=5)  # a publication in progress is retried after this if its run died
FIRST_RETRY = timedelta(seconds=30)
MAX_RETRY = timedelta(hours=1)
MAX_ATTEMPTS = 12  # ~5 h of retries with the backoff above, then the note stays


class Routes(Protocol):
    """Where one learner's outcome can go.

    - ``post`` puts ``msg`` in the community's channel, or in the thread under the message
      ``thread`` (a ref an earlier post returned); returns its ref.
    - ``dm`` sends ``msg`` privately to the learner; returns its ref.
    - ``reply`` answers the learner's interaction, visible to them only; raises
      :class:`InteractionExpired` when there is none (any more).

    Each raises :class:`DeliveryFailed` (or a kind of it) when the platform refuses.
    """

    async def post(self, msg: Message, *, thread: str | None = None) -> str: ...

    async def dm(self, msg: Message) -> str: ...

    async def reply(self, msg: Message) -> str: ...


@dataclass
class OutboxRoutes:
    """The routes of a learner's interaction (``submit`` in this process)."""

    out: Outbox
    actor: Actor

    async def post(self, msg: Message, *, thread: str | None = None) -> str:
        return await self.out.post(msg, thread=thread)

    async def dm(self, msg: Message) -> str:
        return await self.out.dm(self.actor, msg)

    async def reply(self, msg: Message) -> str:
        return await self.out.reply(msg)


@dataclass
class ChannelRoutes:
    """The routes without an interaction (a resumed grade, a retry): the platform's channels."""

    channels: Channels
    community: Community | None
    user_id: str

    async def post(self, msg: Message, *, thread: str | None = None) -> str:
        if self.community is None or not self.community.channel_id:
            raise DeliveryFailed("no results channel is set here (an admin sets one)")
        return await self.channels.post(self.community, msg, thread=thread)

    async def dm(self, msg: Message) -> str:
        return await self.channels.dm(self.community, self.user_id, msg)

    async def reply(self, msg: Message) -> str:
        raise InteractionExpired("no interaction to answer (the grade outlived it)")


async def _attempt(call: Awaitable[str]) -> str:
    """A route's call; an unexpected error (a dropped connection, a bug in an adapter) is a
    transient refusal, so a finished grade is never failed by its publication."""
    try:
        return await call
    except DeliveryFailed:
        raise
    except Exception as exc:  # noqa: BLE001 — anything else the platform's client raised
        log.warning("publishing failed unexpectedly", exc_info=True)
        raise DeliveryFailed(
            f"the platform did not answer ({type(exc).__name__})", transient=True
        ) from exc


def _backoff(attempts: int, hint: float | None) -> timedelta:
    wait = min(FIRST_RETRY * 2 ** max(0, attempts - 1), MAX_RETRY)
    return max(wait, timedelta(seconds=hint or 0))


def graded_from(sub: Submission) -> Graded:
    """The stored grade of a finished submission (its report and the files beside it)."""
    if sub.report is None:
        raise ValueError(f"submission {sub.id} has no report")
    out_dir = Path(sub.report_dir or ".")
    files = sorted(p for p in out_dir.iterdir() if p.is_file()) if out_dir.is_dir() else []
    return Graded(Report.from_dict(sub.report), out_dir, files)


class Publisher:
    """Publishes finished grades and retries what the platform refused for a while."""

    def __init__(
        self,
        store: Store,
        channels: ChannelRegistry,
        *,
        clock: Clock = utcnow,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        self.store = store
        self.channels = channels
        self.clock = clock
        self.max_attempts = max_attempts

    def pending_row(self, sub_id: int) -> Publication:
        """The row to add in the same transaction that marks the submission done (so a crash
        in between cannot lose the publication); leased, as the caller publishes at once."""
        now = self.clock()
        return Publication(
            submission_id=sub_id,
            status="pending",
            attempts=0,
            created_at=now,
            updated_at=now,
            next_attempt_at=now + LEASE,
        )

    async def publish(
        self, sub_id: int, graded: Graded, routes: Routes, *, learner: str
    ) -> Publication:
        """Publish what remains of ``sub_id`` through ``routes``; never raises
        :class:`DeliveryFailed`. Returns the publication as it was left."""
        async with self.store.session() as s:
            sub = await s.get_one(Submission, sub_id)
            pub = await s.scalar(select(Publication).where(Publication.submission_id == sub_id))
            if pub is None:
                pub = self.pending_row(sub_id)
                s.add(pub)
            pub.attempts += 1
            pub.next_attempt_at = self.clock() + LEASE
        return await self._run(pub, sub, graded, routes, learner)

    async def retry_due(self) -> int:
        """Publish again every pending publication whose time has come, through the channels of
        its learner's platform (skipped when this process does not run that platform). Returns
        how many were tried."""
        now = self.clock()
        async with self.store.session() as s:
            due = list(
                await s.scalars(
                    select(Publication.submission_id)
                    .where(Publication.status == "pending", Publication.next_attempt_at <= now)
                    .order_by(Publication.id)
                )
            )
        tried = 0
        for sub_id in due:
            async with self.store.session() as s:
                sub = await s.get_one(Submission, sub_id)
                user = await s.get_one(User, sub.user_id)
                community = await s.get(Community, sub.community_id) if sub.community_id else None
            channels = self.channels.get(user.platform)
            if channels is None:
                continue
            try:
                graded = graded_from(sub)
            except (ValueError, OSError) as exc:
                log.warning(
                    "publication of submission %d: its report is unreadable: %s", sub_id, exc
                )
                continue
            routes = ChannelRoutes(channels, community, user.platform_id)
            try:
                await self.publish(sub_id, graded, routes, learner=user.display_name)
            except Exception:  # the store itself: this one waits for the next run
                log.exception("publication of submission %d", sub_id)
            tried += 1
        return tried

    async def notes(self, sub_ids: list[int]) -> dict[int, Publication]:
        """The publications of these submissions that carry something for the learner to read
        (a channel refusal, an undelivered outcome)."""
        if not sub_ids:
            return {}
        async with self.store.session() as s:
            rows = await s.scalars(
                select(Publication).where(
                    Publication.submission_id.in_(sub_ids),
                    (Publication.note.is_not(None)) | (Publication.channel_error.is_not(None)),
                )
            )
            return {p.submission_id: p for p in rows}

    # -- the route ---------------------------------------------------------------------------
    async def _run(
        self, pub: Publication, sub: Submission, graded: Graded, routes: Routes, learner: str
    ) -> Publication:
        plot = next((f for f in graded.files if f.suffix == ".png"), None)
        waiting: DeliveryFailed | None = None  # the transient refusal that leaves a step pending

        async def save() -> None:
            async with self.store.session() as s:
                await s.merge(pub)

        under = sub.thread  # the discussion goes under the day's post, like the card, or
        if pub.card_ref is None:  # — when that thread was refused — under the card itself
            card = views.scorecard(graded.report, learner, plot)
            try:
                pub.card_ref, in_thread = await self._post(routes, card, sub.thread)
                under = sub.thread if in_thread else None
            except DeliveryFailed as exc:
                pub.channel_error = exc.reason
                if exc.transient:
                    waiting = exc
                else:
                    pub.card_ref = pub.discussion_ref = SKIPPED
            await save()
        if pub.discussion_ref is None and waiting is None and pub.card_ref is not None:
            try:
                pub.discussion_ref, _ = await self._post(
                    routes, views.discussion(graded.report), under or pub.card_ref
                )
            except DeliveryFailed as exc:
                if exc.transient:
                    waiting = exc
                else:
                    pub.discussion_ref = SKIPPED  # the full report carries the discussion
                    pub.channel_error = pub.channel_error or exc.reason
            await save()
        if pub.report_ref is None or (pub.report_ref == NOTED and pub.status == "pending"):
            private = views.private_report(
                render_markdown(graded.report),
                [f for f in graded.files if f.suffix != ".md"],
                channel_error=pub.channel_error if pub.card_ref in (None, SKIPPED) else None,
                later=waiting is not None,
            )
            failed = await self._private(pub, routes, private)
            if failed is not None and failed.transient:
                waiting = waiting or failed
            await save()

        pub.updated_at = self.clock()
        if waiting is None:
            pub.status, pub.next_attempt_at, pub.last_error = "published", None, None
        elif pub.attempts >= self.max_attempts:
            pub.status, pub.next_attempt_at, pub.last_error = "abandoned", None, waiting.reason
            log.warning("submission %d: gave up publishing: %s", sub.id, waiting.reason)
        else:
            pub.last_error = waiting.reason
            pub.next_attempt_at = self.clock() + _backoff(pub.attempts, waiting.retry_after)
            log.info(
                "submission %d: publishing again at %s (%s)",
                sub.id,
                pub.next_attempt_at,
                waiting.reason,
            )
        await save()
        return pub

    @staticmethod
    async def _post(routes: Routes, msg: Message, thread: str | None) -> tuple[str, bool]:
        """In the thread under ``thread``, else — refused for good — in the channel; the ref,
        and whether it went in that thread."""
        if thread is None:
            return await _attempt(routes.post(msg)), False
        try:
            return await _attempt(routes.post(msg, thread=thread)), True
        except DeliveryFailed as exc:
            if exc.transient:
                raise
            refused = exc
        log.info("thread under %s refused (%s); posting in the channel", thread, refused.reason)
        try:
            return await _attempt(routes.post(msg)), False
        except DeliveryFailed as exc:  # both: the admin needs both reasons
            raise DeliveryFailed(
                f"{refused.reason}; {exc.reason}",
                transient=exc.transient,
                retry_after=exc.retry_after,
            ) from exc

    async def _private(
        self, pub: Publication, routes: Routes, msg: Message
    ) -> DeliveryFailed | None:
        """DM, else a private reply, else a note; the DM's refusal when neither was delivered."""
        try:
            pub.report_ref = await _attempt(routes.dm(msg))
            pub.note = None
            return None
        except DeliveryFailed as exc:
            dm_refused = exc
        try:
            pub.report_ref = await _attempt(routes.reply(msg))
            pub.note = None
            return None
        except DeliveryFailed as exc:
            log.info("no private route reached the learner: %s; %s", dm_refused.reason, exc.reason)
        pub.report_ref = NOTED
        pub.note = f"not delivered: {dm_refused.reason}"
        return dm_refused
