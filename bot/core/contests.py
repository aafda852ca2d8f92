"""Weekly contests: one challenge, a window, an opening, a reminder, the close, final standings.

Score = the learner's best submission made inside ``[starts_at, ends_at)`` in the contest's
community; ties go to the earlier submission. Submissions made after the close are graded as
usual but not ranked. A ``hosted_only`` contest ranks only code we built and ran on the same
caps for everyone (``Submission.hosted``): a URL submitted during it is graded, not ranked. Each announcement is recorded when made (``opened_at`` …), so running
:meth:`Contests.advance` again, or late after a restart, never repeats one; with ``firings``,
each is also claimed in the store first, so replicas that all run it make it once
(``bot.core.firings``). The final standings wait until every submission made in time has
finished grading.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import func, select

from bot.core import boards
from bot.core.channels import ChannelRegistry
from bot.core.clock import Clock, utcnow
from bot.core.errors import CoachError
from bot.core.firings import Firings
from bot.core.message import Field, Message, Tone
from bot.core.views import start_button
from bot.store import Community, Contest, Store, Submission
from bot.store.models import ACTIVE
from challenges.catalog import Catalog, ChallengeError

log = logging.getLogger(__name__)

Listener = Callable[[Contest], Awaitable[None]]


@dataclass(frozen=True)
class Step:
    name: str  # open | remind | close
    at: datetime


def parse_local(text: str, timezone: str) -> datetime:
    """``2026-11-30T09:00`` in the community's timezone (or with its own offset)."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise CoachError(f"{text!r} is not a date and time like 2026-11-30T09:00") from None
    return when if when.tzinfo else when.replace(tzinfo=ZoneInfo(timezone))


def is_live(contest: Contest, now: datetime) -> bool:
    return contest.cancelled_at is None and contest.starts_at <= now < contest.ends_at


class Contests:
    def __init__(
        self,
        store: Store,
        catalog: Catalog,
        channels: ChannelRegistry,
        *,
        reminder_before: timedelta,
        clock: Clock = utcnow,
        firings: Firings | None = None,
    ) -> None:
        self.store = store
        self.firings = firings
        self.catalog = catalog
        self.channels = channels
        self.reminder_before = reminder_before
        self.clock = clock
        self._locks: defaultdict[int, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._listeners: list[Listener] = []

    def on_change(self, listener: Listener) -> None:
        """Call ``listener`` after a contest is created or cancelled (the scheduler plans)."""
        self._listeners.append(listener)

    def off_change(self, listener: Listener) -> None:
        self._listeners.remove(listener)

    async def _changed(self, contest: Contest) -> None:
        for listener in list(self._listeners):
            try:
                await listener(contest)
            except Exception:
                log.exception("a listener of contest #%d failed", contest.id)

    # -- admin ---------------------------------------------------------------------------------
    async def create(
        self,
        community: Community,
        challenge_id: str,
        starts_at: datetime,
        ends_at: datetime,
        *,
        created_by: str,
        channel_id: str | None = None,
        hosted_only: bool = False,
    ) -> Contest:
        try:
            challenge = self.catalog.get(challenge_id)
        except ChallengeError as exc:
            raise CoachError(str(exc)) from None
        channel = channel_id or community.channel_id
        if not channel:
            raise CoachError("no channel: set the community's channel first, or name one")
        if ends_at <= starts_at:
            raise CoachError("a contest must end after it starts")
        if ends_at <= self.clock():
            raise CoachError("that contest would already be over")
        async with self.store.session() as s:
            contest = Contest(
                community_id=community.id,
                challenge=challenge.id,
                channel_id=channel,
                starts_at=starts_at,
                ends_at=ends_at,
                created_by=created_by,
                hosted_only=hosted_only,
            )
            s.add(contest)
        await self._changed(contest)
        return contest

    async def cancel(self, community: Community, contest_id: int) -> Contest:
        async with self.store.session() as s:
            contest = await s.get(Contest, contest_id)
            if contest is None or contest.community_id != community.id:
                raise CoachError(f"there is no contest #{contest_id} here")
            if contest.closed_at is not None:
                raise CoachError(f"contest #{contest_id} is already closed")
            contest.cancelled_at = self.clock()
        await self._changed(contest)
        return contest

    async def get(self, contest_id: int) -> Contest | None:
        async with self.store.session() as s:
            return await s.get(Contest, contest_id)

    async def of(self, community: Community) -> list[Contest]:
        """The community's contests not cancelled, newest first."""
        async with self.store.session() as s:
            return list(
                await s.scalars(
                    select(Contest)
                    .where(Contest.community_id == community.id, Contest.cancelled_at.is_(None))
                    .order_by(Contest.starts_at.desc())
                )
            )

    async def current(self, community: Community) -> Contest | None:
        """The running contest, else the next one, else the latest."""
        now = self.clock()
        contests = await self.of(community)
        live = [c for c in contests if is_live(c, now)]
        upcoming = sorted((c for c in contests if c.starts_at > now), key=lambda c: c.starts_at)
        return next(iter(live + upcoming + contests), None)

    async def live_on(
        self,
        community_id: int,
        challenge: str,
        *,
        hosted_only: bool = False,
        at: datetime | None = None,
    ) -> Contest | None:
        """The contest of the community on ``challenge`` running now (or ``at``), not
        cancelled (``hosted_only``: one that ranks hosted code only)."""
        now = at or self.clock()
        query = select(Contest).where(
            Contest.community_id == community_id,
            Contest.challenge == challenge,
            Contest.cancelled_at.is_(None),
            Contest.starts_at <= now,
            Contest.ends_at > now,
        )
        if hosted_only:
            query = query.where(Contest.hosted_only.is_(True))
        async with self.store.session() as s:
            return await s.scalar(query.limit(1))

    async def unfinished(self) -> list[Contest]:
        """Contests with an announcement still to make (the scheduler plans these)."""
        async with self.store.session() as s:
            return list(
                await s.scalars(
                    select(Contest).where(
                        Contest.cancelled_at.is_(None), Contest.standings_at.is_(None)
                    )
                )
            )

    # -- the schedule --------------------------------------------------------------------------
    def steps(self, contest: Contest) -> list[Step]:
        remind = contest.ends_at - self.reminder_before
        steps = [Step("open", contest.starts_at)]
        if remind > contest.starts_at:
            steps.append(Step("remind", remind))
        steps.append(Step("close", contest.ends_at))
        return steps

    async def advance(self, contest_id: int) -> list[str]:
        """Make every announcement that is due and not made yet; the names of those made."""
        made: list[str] = []
        async with self._locks[contest_id]:
            contest = await self.get(contest_id)
            if contest is None or contest.cancelled_at is not None:
                return made
            community = await self._community(contest)
            channels = self.channels.get(community.platform)
            if channels is None:
                return made
            now = self.clock()
            if contest.opened_at is None and now >= contest.starts_at:
                async with self._once(community, contest, "open", contest.starts_at) as mine:
                    if mine:
                        if now < contest.ends_at:  # an opening after the close would confuse
                            await channels.post(
                                community,
                                self._opening(contest),
                                channel_id=contest.channel_id,
                                ping=True,
                            )
                            made.append("open")
                        await self._record(contest.id, "opened_at", now)
            remind = contest.ends_at - self.reminder_before
            if contest.reminded_at is None and now >= remind and remind > contest.starts_at:
                async with self._once(community, contest, "remind", remind) as mine:
                    if mine:
                        if now < contest.ends_at:
                            await channels.post(
                                community,
                                await self._reminder(contest),
                                channel_id=contest.channel_id,
                            )
                            made.append("remind")
                        await self._record(contest.id, "reminded_at", now)
            if contest.closed_at is None and now >= contest.ends_at:
                async with self._once(community, contest, "close", contest.ends_at) as mine:
                    if mine:
                        pending = await self.pending(contest)
                        await channels.post(
                            community,
                            self._closing(contest, pending),
                            channel_id=contest.channel_id,
                        )
                        await self._record(contest.id, "closed_at", now)
                        made.append("close")
        if await self.settle(contest_id):
            made.append("standings")
        return made

    async def settle(self, contest_id: int) -> bool:
        """Post the final standings of a closed contest once nothing made in time is grading."""
        async with self._locks[contest_id]:
            contest = await self.get(contest_id)
            if contest is None or contest.closed_at is None or contest.standings_at is not None:
                return False
            if contest.cancelled_at is not None or await self.pending(contest):
                return False
            community = await self._community(contest)
            channels = self.channels.get(community.platform)
            if channels is None:
                return False
            async with self._once(community, contest, "standings", contest.ends_at) as mine:
                if not mine:
                    return False
                message = standings_message(contest, await self.standings(contest), final=True)
                await channels.post(community, message, channel_id=contest.channel_id)
                await self._record(contest.id, "standings_at", self.clock())
            return True

    async def settle_all(self) -> None:
        """After a grade: closed contests whose standings were waiting on it."""
        async with self.store.session() as s:
            ids = list(
                await s.scalars(
                    select(Contest.id).where(
                        Contest.closed_at.is_not(None),
                        Contest.standings_at.is_(None),
                        Contest.cancelled_at.is_(None),
                    )
                )
            )
        for contest_id in ids:
            await self.settle(contest_id)

    # -- results -------------------------------------------------------------------------------
    async def standings(self, contest: Contest) -> list[boards.Entry]:
        rows = await boards.graded(
            self.store,
            challenge=contest.challenge,
            since=contest.starts_at,
            until=contest.ends_at,
            community_id=contest.community_id,
        )
        if contest.hosted_only:
            rows = [r for r in rows if r.hosted]
        return boards.best_per_learner(rows)

    async def pending(self, contest: Contest) -> int:
        """Submissions made in the window that are still queued or grading."""
        async with self.store.session() as s:
            n = await s.scalar(
                select(func.count())
                .select_from(Submission)
                .where(
                    Submission.community_id == contest.community_id,
                    Submission.challenge == contest.challenge,
                    Submission.created_at >= contest.starts_at,
                    Submission.created_at < contest.ends_at,
                    Submission.status.in_(ACTIVE),
                )
            )
        return int(n or 0)

    # -- messages ------------------------------------------------------------------------------
    def _opening(self, contest: Contest) -> Message:
        challenge = self.catalog.get(contest.challenge)
        return Message(
            title=f"Contest #{contest.id} is open: {challenge.spec.title}",
            body=challenge.spec.summary
            + "\n\nYour best score in the window counts; ties go to the earlier submission."
            + (HOSTED_ONLY if contest.hosted_only else ""),
            fields=window_fields(contest),
            buttons=[start_button(contest.challenge)],
            footer=f"/submit {contest.challenge} with your code (an archive or a git URL) or "
            "your service's URL before the close",
            tone=Tone.SUCCESS,
        )

    async def _reminder(self, contest: Contest) -> Message:
        left = contest.ends_at - self.clock()
        hours = max(1, round(left.total_seconds() / 3600))
        msg = standings_message(contest, await self.standings(contest), final=False)
        msg.title = f"Contest #{contest.id} closes in about {hours} h — standings so far"
        return msg

    def _closing(self, contest: Contest, pending: int) -> Message:
        body = "Submissions made from now on are graded but not ranked."
        if pending:
            body += (
                f"\n{pending} submission(s) made in time are still grading; the final "
                "standings follow when they finish."
            )
        return Message(title=f"Contest #{contest.id} ({contest.challenge}) is closed", body=body)

    def _once(
        self, community: Community, contest: Contest, step: str, at: datetime
    ) -> AbstractAsyncContextManager[bool]:
        """The claim of one announcement across processes (always ours without ``firings``)."""
        if self.firings is None:
            return nullcontext(True)
        return self.firings.once(contest_job(community.platform, contest.id, step), at)

    async def _community(self, contest: Contest) -> Community:
        async with self.store.session() as s:
            return await s.get_one(Community, contest.community_id)

    async def _record(self, contest_id: int, column: str, when: datetime) -> None:
        async with self.store.session() as s:
            setattr(await s.get_one(Contest, contest_id), column, when)


HOSTED_ONLY = (
    "\n\n⚙ Hosted only: submit your code (a .zip/.tar.gz or a public git URL); we run it on "
    "the same resources for everyone. A URL is graded but not ranked."
)


def contest_job(platform: str, contest_id: int, step: str) -> str:
    """The name of a contest announcement's firing: ``<platform>/contest:<id>:<step>``."""
    return f"{platform}/contest:{contest_id}:{step}"


def window_fields(contest: Contest) -> list[Field]:
    fields = [
        Field("Challenge", contest.challenge),
        Field("Opens", f"{contest.starts_at:%Y-%m-%d %H:%M} UTC"),
        Field("Closes", f"{contest.ends_at:%Y-%m-%d %H:%M} UTC"),
    ]
    if contest.hosted_only:
        fields.append(Field("Ranked", "⚙ hosted code only"))
    return fields


def standings_message(contest: Contest, entries: list[boards.Entry], *, final: bool) -> Message:
    title = f"Contest #{contest.id} ({contest.challenge}) — " + (
        "final standings" if final else "standings"
    )
    msg = boards.render(title, entries, empty="No ranked submission.")
    if final and entries:
        msg.tone = Tone.SUCCESS
        msg.body = f"🏆 **{entries[0].name}** wins with {entries[0].score}/100.\n\n" + msg.body
    return msg


def contest_message(contest: Contest, entries: list[boards.Entry], now: datetime) -> Message:
    """What ``contest`` answers: the window, the state, the standings so far."""
    if now < contest.starts_at:
        state = "upcoming"
    elif now < contest.ends_at:
        state = "open"
    else:
        state = "closed"
    msg = standings_message(contest, entries, final=contest.standings_at is not None)
    msg.title = f"Contest #{contest.id}: {contest.challenge} ({state})"
    msg.fields = window_fields(contest)
    return msg
