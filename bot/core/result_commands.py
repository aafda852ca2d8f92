"""The coach's results: a learner's results and streak, leaderboards, trade-offs, the full logs
of their hosted code."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import defer

from bot.core import boards, views
from bot.core.contests import standings_message
from bot.core.errors import CoachError
from bot.core.logfiles import log_files
from bot.core.message import Field, Message
from bot.core.outbox import Actor, DeliveryFailed, Outbox
from bot.core.streaks import COUNTED_STATUS, current_streak, local_days
from bot.store import Community, Submission, User


class ResultCommands:
    """Part of :class:`bot.core.coach.Coach`, whose attributes and catalog and learner
    methods it uses."""

    async def results(self, actor: Actor) -> Message:
        user = await self.user(actor)
        async with self.store.session() as s:
            subs = list(
                await s.scalars(
                    select(Submission)
                    .options(defer(Submission.report))  # reports are large; not shown here
                    .where(Submission.user_id == user.id)
                    .order_by(Submission.id.desc())
                    .limit(10)
                )
            )
        if not subs:
            return Message(title="Your results", body="No submission yet.")
        notes = await self.publisher.notes([s.id for s in subs])
        rows = [
            f"#{s.id} {s.challenge}: "
            + (
                f"{s.score}/100{boards.HOSTED_MARK if s.hosted else ''} "
                f"{'passed' if s.passed else 'not yet'}"
                if s.status == "done"
                else s.status
            )
            + (f" — {s.error}" if s.error else "")
            + views.publication_note(notes.get(s.id))
            for s in subs
        ]
        streak = await self.streak(user)
        return Message(
            title="Your results",
            body="\n".join(rows),
            fields=[Field("Streak", f"{streak} day{'' if streak == 1 else 's'}")],
            footer="" if user.public else "hidden from public boards (privacy on)",
        )

    async def send_logs(self, actor: Actor, ref: str | None, out: Outbox) -> None:
        """The full logs of one of the learner's hosted submissions (``ref``: its ``sub-…`` id,
        else their latest) as files (``bot.core.logfiles``): by DM, a short private answer
        pointing there; with DMs closed, in the private answer itself (Slack's cannot carry
        files: it says so). Only their owner gets them: :class:`CoachError` for anyone else's
        or an unknown id, worded alike (an id tells nobody whether it exists)."""
        user = await self.user(actor)
        query = (
            select(Submission.challenge, Submission.logs_ref)
            .where(Submission.user_id == user.id, Submission.logs_ref.is_not(None))
            .order_by(Submission.id.desc())
            .limit(1)
        )
        if ref is not None:
            query = query.where(Submission.logs_ref == ref)
        async with self.store.session() as s:
            row = (await s.execute(query)).first()
        if row is None:
            raise CoachError(
                f"you have no code submission {ref}" if ref else "you have no code submission yet"
            )
        files = log_files(self.settings.data_dir, row.logs_ref)
        msg = views.full_logs(row.challenge, row.logs_ref, files)
        try:
            await out.dm(actor, msg)
        except DeliveryFailed:
            await out.reply(msg)
            return
        await out.reply(
            Message(title="Logs sent", body=f"The logs of {row.logs_ref} are in your DMs.")
        )

    async def streak(self, user: User) -> int:
        """Days with a graded submission in a row (one missed day forgiven), in the learner's
        timezone (see ``bot.core.streaks``)."""
        async with self.store.session() as s:
            moments = list(
                await s.scalars(
                    select(Submission.created_at).where(
                        Submission.user_id == user.id, Submission.status == COUNTED_STATUS
                    )
                )
            )
        today = self.clock().astimezone(ZoneInfo(user.timezone)).date()
        return current_streak(local_days(moments, user.timezone), today)

    async def leaderboard(
        self, challenge_id: str | None = None, *, community: Community | None = None
    ) -> Message:
        """The all-time board (sum of best scores per challenge) or one challenge's board."""
        if challenge_id:
            self.challenge(challenge_id)
        key = (challenge_id, community.id if community else None)
        cached = self._boards.get(key)
        if cached is not None:
            return cached
        rows = await boards.graded(self.store, challenge=challenge_id, community_id=key[1])
        if challenge_id:
            board = boards.render(f"Leaderboard — {challenge_id}", boards.best_per_learner(rows))
        else:
            board = boards.render(
                "Leaderboard — all challenges (sum of best scores)",
                boards.all_time(rows),
                points="",
            )
        return self._boards.put(key, board)

    async def board(self, community: Community, scope: str) -> Message:
        """The board a self-updating message shows: ``all``, ``challenge:ID``, ``contest:N``."""
        kind, _, arg = scope.partition(":")
        if kind == "all":
            return await self.leaderboard(community=community)
        if kind == "challenge" and arg:
            return await self.leaderboard(arg, community=community)
        if kind == "contest" and arg.isdigit():
            contest = await self.contests.get(int(arg))
            if contest is None or contest.community_id != community.id:
                raise CoachError(f"there is no contest #{arg} here")
            entries = await self.contests.standings(contest)
            return standings_message(contest, entries, final=contest.standings_at is not None)
        raise CoachError(f"unknown board {scope!r}: all, challenge:ID or contest:N")

    async def tradeoffs(self, actor: Actor, challenge_id: str) -> Message:
        """The trade-off discussion of the learner's latest grade, or of the reference designs."""
        challenge = self.challenge(challenge_id)
        user = await self.user(actor)
        async with self.store.session() as s:
            latest = await s.scalar(
                select(Submission)
                .where(
                    Submission.user_id == user.id,
                    Submission.challenge == challenge.id,
                    Submission.status == "done",
                )
                .order_by(Submission.id.desc())
                .limit(1)
            )
        if latest is not None and latest.report:
            return Message(
                title=f"Trade-offs in your {challenge.id} design",
                body=latest.report.get("discussion", ""),
            )
        return Message(title=f"Trade-offs: {challenge.spec.title}", body=challenge.tradeoffs())
