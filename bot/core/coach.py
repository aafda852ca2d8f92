"""The coach's use-cases. Adapters turn platform events into these calls."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from datetime import UTC, date, datetime

from sqlalchemy import func, select

from bot.config import Settings
from bot.core import views
from bot.core.communities import Communities
from bot.core.grader import Graded, Grader
from bot.core.message import Message
from bot.core.outbox import Actor, DirectMessageClosed, Outbox
from bot.logs import SECRETS
from bot.store import EnvironmentRecord, Store, Submission, User
from challenges.catalog import Catalog, Challenge, ChallengeError
from grading.render import render_markdown
from grading.runner import CannotGrade
from provisioning import EnvironmentSpec
from provisioning.backend import ProvisioningError
from provisioning.environment import Environment
from provisioning.manager import Provisioner

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 1.0  # chat platforms rate-limit edits


class CoachError(Exception):
    """A refusal the learner should read (unknown challenge, quota, bad URL…)."""


class Coach:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        catalog: Catalog,
        provisioner: Provisioner,
        grader: Grader,
    ) -> None:
        self.settings = settings
        self.store = store
        self.catalog = catalog
        self.provisioner = provisioner
        self.grader = grader
        self.communities = Communities(store)
        self._grading = asyncio.Semaphore(1)

    # -- catalog ------------------------------------------------------------------------
    def challenge(self, challenge_id: str) -> Challenge:
        try:
            return self.catalog.get(challenge_id)
        except ChallengeError as exc:
            raise CoachError(str(exc)) from None

    def today(self, day: date | None = None) -> Message:
        day = day or datetime.now(UTC).date()
        challenge = self.catalog.for_day(day)
        return views.daily_post(challenge, datetime.combine(day, datetime.min.time()))

    def daily_post(self, challenge_id: str) -> Message:
        return views.daily_post(self.challenge(challenge_id))

    def list_challenges(self) -> Message:
        return views.challenge_list(list(self.catalog))

    def show(self, challenge_id: str) -> Message:
        return views.challenge_detail(self.challenge(challenge_id))

    # -- learners -----------------------------------------------------------------------
    async def user(self, actor: Actor) -> User:
        async with self.store.session() as s:
            found = await s.scalar(
                select(User).where(User.platform == actor.platform, User.platform_id == actor.id)
            )
            if found is None:
                found = User(platform=actor.platform, platform_id=actor.id, display_name=actor.name)
                s.add(found)
                await s.flush()
            elif found.display_name != actor.name:
                found.display_name = actor.name
            return found

    @staticmethod
    def owner(actor: Actor) -> str:
        return f"{actor.platform}:{actor.id}"

    # -- environments -------------------------------------------------------------------
    async def provision(self, actor: Actor, challenge_id: str, out: Outbox) -> Environment:
        challenge = self.challenge(challenge_id)
        ref = await out.reply(views.provisioning(challenge.id))
        spec = challenge.environment_spec(self.owner(actor), self.settings.env_ttl)
        try:
            env = await self.create_environment(actor, spec)
        except CoachError as exc:
            await out.edit(ref, views.error(str(exc)))
            raise
        try:
            await out.dm(actor, views.bundle_dm(env))
            await out.edit(ref, views.bundle_sent(env))
        except DirectMessageClosed:
            await out.edit(ref, views.bundle_dm(env))  # private reply, never the channel
        return env

    async def create_environment(self, actor: Actor, spec: EnvironmentSpec) -> Environment:
        """Provision ``spec`` and record it, so a restart knows it is not an orphan."""
        user = await self.user(actor)
        try:
            env = await self.provisioner.up(spec)
        except ProvisioningError as exc:
            raise CoachError(str(exc)) from None
        SECRETS.add(*env.secrets())
        async with self.store.session() as s:
            s.add(
                EnvironmentRecord(
                    id=env.id,
                    user_id=user.id,
                    challenge=spec.label,
                    backend=env.backend,
                    created_at=env.created_at,
                    expires_at=env.expires_at,
                )
            )
        return env

    async def environments(self, actor: Actor) -> list[Environment]:
        return await self.provisioner.list(owner=self.owner(actor))

    async def env_status(self, actor: Actor) -> Message:
        return views.environments(await self.environments(actor))

    async def _own_env(self, actor: Actor, env_id: str) -> Environment:
        env = next((e for e in await self.environments(actor) if e.id == env_id), None)
        if env is None:
            raise CoachError(f"you have no environment {env_id!r}")
        return env

    async def env_extend(self, actor: Actor, env_id: str) -> Message:
        await self._own_env(actor, env_id)
        try:
            env = await self.provisioner.extend(env_id, self.settings.env_extend_by)
        except ProvisioningError as exc:
            raise CoachError(str(exc)) from None
        async with self.store.session() as s:
            rec = await s.get(EnvironmentRecord, env_id)
            if rec is not None:
                rec.expires_at = env.expires_at
        return views.environments([env])

    async def env_destroy(self, actor: Actor, env_id: str) -> Message:
        await self._own_env(actor, env_id)
        await self.destroy_environment(env_id)
        return Message(title=f"Environment {env_id} destroyed", body="Everything in it is gone.")

    async def destroy_environment(self, env_id: str) -> None:
        try:
            await self.provisioner.down(env_id)
        except ProvisioningError as exc:
            raise CoachError(str(exc)) from None
        async with self.store.session() as s:
            rec = await s.get(EnvironmentRecord, env_id)
            if rec is not None:
                rec.destroyed_at = datetime.now(UTC)

    async def known_environment_ids(self) -> set[str]:
        async with self.store.session() as s:
            rows = await s.scalars(
                select(EnvironmentRecord.id).where(EnvironmentRecord.destroyed_at.is_(None))
            )
            return set(rows)

    # -- grading ------------------------------------------------------------------------
    async def submit(
        self,
        actor: Actor,
        challenge_id: str,
        url: str,
        out: Outbox,
        *,
        thread: str | None = None,
        seed: int | None = None,
    ) -> Submission:
        """Grade ``url``; post the score card (and discussion) to the channel, the report by DM."""
        challenge = self.challenge(challenge_id)
        url = url.strip()
        if not url.lower().startswith(("http://", "https://")):
            raise CoachError(f"{url!r} is not an http(s) URL")
        user = await self.user(actor)
        envs = [e for e in await self.environments(actor) if e.label == challenge.id]
        env = envs[0] if envs else None
        seed = secrets.randbelow(2**31) if seed is None else seed
        async with self.store.session() as s:
            sub = Submission(
                user_id=user.id,
                challenge=challenge.id,
                url=url,
                environment=env.id if env else None,
                seed=seed,
            )
            s.add(sub)
        ref = await out.reply(views.grading_progress(challenge.id, "queued", 0.0))
        last = 0.0

        def progress(phase: str, fraction: float) -> None:
            nonlocal last
            now = time.monotonic()
            if now - last >= PROGRESS_EVERY_S or fraction >= 1.0:
                last = now
                msg = views.grading_progress(challenge.id, phase, fraction)
                asyncio.get_running_loop().create_task(out.edit(ref, msg))

        async with self._grading:
            await self._set_status(sub.id, "running")
            out_dir = self.settings.reports_dir / f"submission-{sub.id}"
            try:
                graded = await self.grader.grade(
                    challenge, url, out_dir, seed=seed, env=env, progress=progress
                )
            except CannotGrade as exc:
                await self._finish(sub.id, error=str(exc))
                await out.edit(ref, views.cannot_grade(url, str(exc)))
                raise CoachError(f"could not grade {url}: {exc}") from None
        await self._finish(sub.id, graded=graded)
        await out.edit(ref, views.grading_progress(challenge.id, "done", 1.0))
        await self.publish(actor, graded, out, thread=thread)
        async with self.store.session() as s:
            return await s.get_one(Submission, sub.id)

    async def publish(
        self, actor: Actor, graded: Graded, out: Outbox, *, thread: str | None = None
    ) -> None:
        plot = next((f for f in graded.files if f.suffix == ".png"), None)
        card = await out.post(views.scorecard(graded.report, actor.name, plot), thread=thread)
        await out.post(views.discussion(graded.report), thread=thread or card)
        full = views.full_report(
            render_markdown(graded.report), [f for f in graded.files if f.suffix != ".md"]
        )
        try:
            await out.dm(actor, full)
        except DirectMessageClosed:
            await out.reply(full)

    async def _set_status(self, sub_id: int, status: str) -> None:
        async with self.store.session() as s:
            (await s.get_one(Submission, sub_id)).status = status

    async def _finish(
        self, sub_id: int, *, graded: Graded | None = None, error: str | None = None
    ) -> None:
        async with self.store.session() as s:
            sub = await s.get_one(Submission, sub_id)
            sub.finished_at = datetime.now(UTC)
            if graded is None:
                sub.status, sub.error = "error", error
                return
            sub.status = "done"
            sub.score, sub.passed = graded.report.score, graded.report.passed
            sub.report = graded.report.to_dict()
            sub.report_dir = str(graded.out_dir)

    # -- results ------------------------------------------------------------------------
    async def results(self, actor: Actor) -> Message:
        user = await self.user(actor)
        async with self.store.session() as s:
            subs = list(
                await s.scalars(
                    select(Submission)
                    .where(Submission.user_id == user.id)
                    .order_by(Submission.id.desc())
                    .limit(10)
                )
            )
        if not subs:
            return Message(title="Your results", body="No submission yet.")
        rows = [
            f"- #{s.id} {s.challenge}: "
            + (
                f"{s.score}/100 {'passed' if s.passed else 'not yet'}"
                if s.status == "done"
                else s.status
            )
            + (f" — {s.error}" if s.error else "")
            for s in subs
        ]
        return Message(title="Your results", body="\n".join(rows))

    async def leaderboard(self, challenge_id: str | None = None) -> Message:
        async with self.store.session() as s:
            q = (
                select(User.display_name, func.max(Submission.score), func.count(Submission.id))
                .join(User, User.id == Submission.user_id)
                .where(Submission.status == "done", User.public.is_(True))
                .group_by(User.id)
                .order_by(func.max(Submission.score).desc(), func.min(Submission.finished_at))
                .limit(10)
            )
            if challenge_id:
                self.challenge(challenge_id)
                q = q.where(Submission.challenge == challenge_id)
            rows = (await s.execute(q)).all()
        title = f"Leaderboard — {challenge_id}" if challenge_id else "Leaderboard — all challenges"
        if not rows:
            return Message(title=title, body="No graded submission yet.")
        lines = [
            f"{i}. {name} — {best}/100 ({n} tries)" for i, (name, best, n) in enumerate(rows, 1)
        ]
        return Message(title=title, body="\n".join(lines))

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
