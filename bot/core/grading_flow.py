"""The coach's grading: a submission queued, graded (a URL or hosted code), recorded, published."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from bot.core import views
from bot.core.errors import CoachError
from bot.core.grader import Graded
from bot.core.hosted import HostedError
from bot.core.logfiles import log_files
from bot.core.message import Message
from bot.core.outbox import Actor, DeliveryFailed, Outbox
from bot.core.publish import ChannelRoutes, OutboxRoutes, Routes, graded_from
from bot.core.queue import AlreadyQueued, QueueFull, QueueStopped, Watcher
from bot.core.sources import Source, classify, is_upload
from bot.store import Community, Submission, User
from challenges.catalog import Challenge
from grading.report import LoadScale
from grading.runner import CannotGrade
from provisioning.backend import ProvisioningError
from provisioning.environment import Environment
from provisioning.hosted.service import HostedService
from provisioning.hosted.submission import Submission as HostedSubmission
from provisioning.hosted.submission import env_secrets

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 1.0  # chat platforms rate-limit edits


class NoEnvironment(CoachError):
    """No environment could be made for submitted code to run next to."""


class GradingFlow:
    """Part of :class:`bot.core.coach.Coach`, whose attributes (the store, the queue, the
    grader, the publisher, contests and boards) and other methods it uses."""

    async def submit(
        self,
        actor: Actor,
        challenge_id: str,
        url: str,
        out: Outbox,
        *,
        thread: str | None = None,
        seed: int | None = None,
        community: Community | None = None,
        archive: Path | None = None,
        local_paths: bool = False,
        keep: bool = False,
    ) -> Submission:
        """Queue a submission for grading and wait for it: the progress message shows the place
        in the queue, then the grade; the score card (and discussion) go to the channel (under
        ``thread``), the report by DM. Returns the finished (or cancelled) submission.

        ``url`` is a running service's URL or code: a public git URL (see
        :mod:`bot.core.sources` for the rule), or with ``local_paths`` (the terminal only) a
        folder or archive; ``archive`` is an attached archive already stored under the data
        dir (``url`` is then its file name). Code is built and run by us (hosted), its build
        and run logs go to the learner privately; with ``keep`` it keeps running after the grade
        until the environment's TTL or teardown. Raises :class:`CoachError` for bad input
        (``keep`` with a URL)."""
        try:
            sub, watcher, source = await self._queue(
                actor, challenge_id, url, out, thread, seed, community, archive, local_paths, keep
            )
        except BaseException:
            if archive is not None:  # never queued: nothing else will remove it
                archive.unlink(missing_ok=True)
            raise
        challenge = self.challenge(challenge_id)
        url = sub.url
        if source.kind == "url" and community is not None:
            contest = await self.contests.live_on(community.id, challenge.id, hosted_only=True)
            if contest is not None:
                await self._progress_message(out, actor, views.not_ranked(contest.id, challenge.id))
        ref: str | None = None
        try:
            watcher.position = await self.queue.position(sub.id)
            ref = await self._progress_message(
                out, actor, views.queued(challenge.id, watcher.position)
            )
        finally:
            watcher.attach(ref)
        try:
            done = await watcher.done
        except QueueStopped:
            raise CoachError(
                "the bot is restarting; your submission stays queued and is graded when it is back"
            ) from None
        if done.status == "cancelled" and ref is not None:
            await self._show_ref(out, ref, views.cancelled(challenge.id, done.id))
        elif done.status == "error":
            raise CoachError(f"could not grade {url}: {done.error}")
        return done

    async def _queue(
        self,
        actor: Actor,
        challenge_id: str,
        url: str,
        out: Outbox,
        thread: str | None,
        seed: int | None,
        community: Community | None,
        archive: Path | None,
        local_paths: bool,
        keep: bool,
    ) -> tuple[Submission, Watcher, Source]:
        """Check the submission and queue it; raises :class:`CoachError` when it cannot be."""
        challenge = self.challenge(challenge_id)
        url = url.strip()
        source = Source("code", str(archive)) if archive else classify(url, local_paths=local_paths)
        if source.kind == "code" and self.hosted is None:
            raise CoachError("this bot does not run code; submit your running service's URL")
        if keep and source.kind != "code":
            raise CoachError("keep applies to code we run; a URL is a service you run yourself")
        if source.kind == "url":
            url = source.value
        user = await self.user(actor)
        envs = [e for e in await self.environments(actor) if e.label == challenge.id]
        watcher = Watcher(out, actor, thread)
        try:
            sub = await self.queue.add(
                Submission(
                    user_id=user.id,
                    challenge=challenge.id,
                    url=url,
                    environment=envs[0].id if envs else None,
                    seed=secrets.randbelow(2**31) if seed is None else seed,
                    community_id=community.id if community else None,
                    thread=thread,
                    created_at=self.clock(),
                    kind=source.kind,
                    source=source.value if source.kind == "code" else None,
                    keep=keep,
                ),
                watcher,
            )
        except AlreadyQueued as exc:
            raise CoachError(
                f"your submission #{exc.existing.id} ({exc.existing.challenge}) is still "
                f"{exc.existing.status} — one at a time: wait for it, or `cancel` it first"
            ) from None
        except QueueFull as exc:
            raise CoachError(
                f"grading is busy: {exc.waiting} submissions are waiting; try again at "
                f"{exc.retry_at:%H:%M} UTC"
            ) from None
        return sub, watcher, source

    async def cancel(self, actor: Actor) -> Message:
        """Cancel the learner's queued or running grade."""
        user = await self.user(actor)
        sub = await self.queue.cancel(user.id)
        if sub is None:
            return Message(title="Nothing to cancel", body="You have no submission waiting.")
        return views.cancelled(sub.challenge, sub.id)

    async def _grade(self, sub: Submission, watcher: Watcher | None) -> None:
        """Grade one submission the queue started; record it, then publish the results."""
        try:
            challenge = self.challenge(sub.challenge)
            env = await self.provisioner.get(sub.environment) if sub.environment else None
        except (CoachError, ProvisioningError) as exc:
            await self._finish(sub.id, error=f"{exc}; submit again")
            return
        last = 0.0
        loop = asyncio.get_running_loop()

        def progress(phase: str, fraction: float) -> None:
            nonlocal last
            now = time.monotonic()
            if now - last < PROGRESS_EVERY_S and fraction < 1.0:
                return
            last = now
            if watcher is not None:
                loop.create_task(
                    self._show(watcher, views.grading_progress(challenge.id, phase, fraction))
                )
            else:  # the learner waits in another process (a worker's grade): via the store
                self.queue.progressed(sub.id, phase, fraction)

        out_dir = self.settings.reports_dir / f"submission-{sub.id}"
        scale = await self._contest_scale(sub, challenge)
        if sub.kind == "code":
            progress("build", 0.0)
            await self._grade_code(sub, watcher, challenge, env, out_dir, progress, scale)
            return
        progress("preflight", 0.0)
        try:
            graded = await self.grader.grade(
                challenge, sub.url, out_dir, seed=sub.seed, env=env, progress=progress, scale=scale
            )
        except CannotGrade as exc:
            await self._finish(sub.id, error=str(exc))
            if watcher is not None:
                await self._show(watcher, views.cannot_grade(sub.url, str(exc)))
            return
        await self._finish(sub.id, graded=graded)
        if watcher is not None:
            await self._show(watcher, views.grading_progress(challenge.id, "done", 1.0))
        await self._publish(sub, graded, watcher)

    async def _contest_scale(self, sub: Submission, challenge: Challenge) -> LoadScale | None:
        """An entry of a contest on ``challenge`` in the learner's community (submitted while it
        ran, graded whenever) runs its load at the challenge's floor rate, whichever worker
        grades it (entries rank on equal terms); otherwise None (the worker's own choice,
        ``bot.core.scale``)."""
        if sub.community_id is None:
            return None
        contest = await self.contests.live_on(sub.community_id, challenge.id, at=sub.created_at)
        if contest is None:
            return None
        spec = challenge.spec
        return LoadScale(
            spec.grading.rate,
            spec.stated_load_rate,
            "floor",
            f"contest #{contest.id}: every entry is graded at the challenge's floor rate "
            f"({spec.grading.rate:,g} requests/s) on whichever worker grades it",
        )

    async def _grade_code(
        self,
        sub: Submission,
        watcher: Watcher | None,
        challenge: Challenge,
        env: Environment | None,
        out_dir: Path,
        progress: Callable[[str, float], None],
        scale: LoadScale | None,
    ) -> None:
        """Build, run and grade submitted code (``bot.core.hosted``) next to the learner's
        environment (a fresh one, removed after, when they have none). Each failing step is
        recorded as ``"<step> failed: <reason>"``; its log lines go to the learner privately.
        Kept code (``sub.keep``) runs on until its environment is torn down (:meth:`_kept`)."""
        assert self.hosted is not None and sub.source is not None

        def say(line: str) -> None:
            log.info("submission %d: %s", sub.id, line)

        try:
            hsub, built = await self.hosted.prepare(
                sub.source, challenge, scope=f"user-{sub.user_id}", say=say
            )
        except HostedError as exc:
            await self._code_failed(sub, watcher, "build", str(exc), logs_ref=exc.submission)
            return
        secrets: tuple[str, ...] = ()
        try:
            async with self.code_environment(sub, challenge, env, keep=sub.keep) as near:
                secrets = env_secrets(near) if near is not None else ()
                result = await self.hosted.grade_prepared(
                    hsub, built, challenge, near, seed=sub.seed, out_dir=out_dir,
                    progress=progress, say=say, scale=scale, keep=sub.keep,
                )  # fmt: skip
                if result.service is not None:
                    await self._kept(sub, watcher, hsub, result.service, near, secrets)
        except NoEnvironment as exc:
            hsub.update(status="failed")
            await hsub.cleanup()
            await self._code_failed(sub, watcher, "environment", str(exc), logs=False)
            return
        except HostedError as exc:
            await self._code_failed(sub, watcher, "start", str(exc), hsub.id, secrets)
            return
        except CannotGrade as exc:
            await self._code_failed(sub, watcher, "grade", str(exc), hsub.id, secrets)
            return
        await self._finish(sub.id, graded=result.graded, hosted=True, logs_ref=hsub.id)
        if result.crashed:
            await self._tell_privately(
                sub,
                watcher,
                views.hosted_logs(
                    challenge.id, "processes stopped during the grade", result.crash_report,
                    log_files(self.settings.data_dir, hsub.id, secrets),
                ),
            )  # fmt: skip
        if watcher is not None:
            await self._show(watcher, views.grading_progress(challenge.id, "done", 1.0))
        await self._publish(sub, result.graded, watcher)

    async def _kept(
        self,
        sub: Submission,
        watcher: Watcher | None,
        hsub: HostedSubmission,
        service: HostedService,
        env: Environment,
        secrets: tuple[str, ...],
    ) -> None:
        """Kept code runs on: the environment's teardown (by the learner, the reaper at its
        TTL, or this process closing: ``Provisioner.on_teardown``) stops it and keeps its
        logs; the box's wall time (the TTL) ends it in any case. The learner is told until
        when, privately."""

        async def stop() -> None:
            await hsub.finish(service, secrets)

        self.provisioner.on_teardown(env.id, stop)
        await self._tell_privately(sub, watcher, views.kept(sub.challenge, service.url, env))

    @asynccontextmanager
    async def code_environment(
        self, sub: Submission, challenge: Challenge, env: Environment | None, *, keep: bool = False
    ) -> AsyncIterator[Environment]:
        """The environment submitted code runs next to: the learner's own for the challenge
        (``env``), else a fresh one of theirs, destroyed after the grade (with ``keep``, and a
        grade that kept the code running, left until its TTL: the reaper tears it down). Raises
        :class:`NoEnvironment` when none can be made (a quota, a backend failure)."""
        if env is not None:
            yield env
            return
        async with self.store.session() as s:
            user = await s.get_one(User, sub.user_id)
        actor = Actor(user.platform, user.platform_id, user.display_name)
        spec = challenge.environment_spec(self.owner(actor), self.settings.env_ttl)
        try:
            own = await self.create_environment(actor, spec)
        except CoachError as exc:
            raise NoEnvironment(str(exc)) from None
        kept = False
        try:
            yield own
            kept = keep
        finally:
            try:
                if not kept:
                    await self.destroy_environment(own.id)
            except CoachError as exc:  # the reaper removes it at its TTL; the grade stands
                log.warning("environment %s not destroyed after a grade: %s", own.id, exc)

    async def _code_failed(
        self,
        sub: Submission,
        watcher: Watcher | None,
        step: str,
        detail: str,
        logs_ref: str | None = None,
        secrets: tuple[str, ...] = (),
        *,
        logs: bool = True,
    ) -> None:
        """Record which step failed (its first line: ``results`` shows it); the last log lines
        (masked by ``bot.core.hosted``) and the full logs of submission ``logs_ref`` as files
        (masked again with ``secrets``: ``bot.core.logfiles``) go to the learner privately,
        never to a channel."""
        first = next((ln for ln in detail.splitlines() if ln.strip()), "no reason given")
        error = f"{step} failed: {first}" + (
            " (its last log lines were sent to you privately)" if logs else ""
        )
        await self._finish(sub.id, error=error, logs_ref=logs_ref)
        if logs:
            files = log_files(self.settings.data_dir, logs_ref, secrets) if logs_ref else []
            await self._tell_privately(
                sub, watcher, views.hosted_logs(sub.challenge, f"{step} failed", detail, files)
            )
        if watcher is not None:
            await self._show(watcher, views.cannot_grade(sub.url, error))

    async def _tell_privately(self, sub: Submission, watcher: Watcher | None, msg: Message) -> None:
        """A DM to the learner (else the private reply of their command); never a channel."""
        if watcher is not None:
            try:
                await watcher.out.dm(watcher.actor, msg)
                return
            except DeliveryFailed as exc:
                log.info("submission %d: no DM (%s); private reply", sub.id, exc.reason)
            try:
                await watcher.out.reply(msg)
            except DeliveryFailed as exc:
                log.warning("submission %d: logs not delivered: %s", sub.id, exc.reason)
            return
        async with self.store.session() as s:
            user = await s.get_one(User, sub.user_id)
            community = await s.get(Community, sub.community_id) if sub.community_id else None
        channels = self.channels.get(user.platform)
        if channels is None:
            return
        try:
            await channels.dm(community, user.platform_id, msg)
        except DeliveryFailed as exc:  # `results` keeps the step that failed
            log.info("submission %d: logs not delivered: %s", sub.id, exc.reason)

    @staticmethod
    async def _progress_message(out: Outbox, actor: Actor, msg: Message) -> str | None:
        """The message progress edits go to: the private reply, else (the interaction is over) a
        DM; None when neither is possible (the grade goes on; its outcome finds its route)."""
        try:
            return await out.reply(msg)
        except DeliveryFailed as exc:
            log.info("no private reply (%s); progress by DM", exc.reason)
        try:
            return await out.dm(actor, msg)
        except DeliveryFailed as exc:
            log.warning("progress not shown: %s", exc.reason)
            return None

    @staticmethod
    async def _show_ref(out: Outbox, ref: str, msg: Message) -> None:
        try:
            await out.edit(ref, msg)
        except DeliveryFailed as exc:
            log.warning("message not updated: %s", exc.reason)

    @staticmethod
    async def _show(watcher: Watcher, msg: Message) -> None:
        """Progress is best effort: a refused edit never fails the grade."""
        try:
            await watcher.show(msg)
        except Exception as exc:  # noqa: BLE001 — any platform refusal; the outcome still goes
            log.warning("progress not shown: %s", getattr(exc, "reason", exc))

    async def _settled(self, sub: Submission) -> None:
        """A submission left the queue: boards and waiting contest standings may move; an
        archive it stored is removed."""
        self._discard_upload(sub)
        if sub.status == "done":
            self._boards.clear()
            self.boards.touch()
        await self.contests.settle_all()

    def _discard_upload(self, sub: Submission) -> None:
        if sub.kind == "code" and sub.source and is_upload(self.settings.data_dir, sub.source):
            Path(sub.source).unlink(missing_ok=True)

    async def _publish(self, sub: Submission, graded: Graded, watcher: Watcher | None) -> None:
        """The score card, discussion and report, by the first route that works (see
        :mod:`bot.core.publish`): the learner's interaction when they wait in this process, the
        platform's channels otherwise (a resumed grade); what is refused for a while is retried
        by :meth:`Publisher.retry_due`."""
        async with self.store.session() as s:
            user = await s.get_one(User, sub.user_id)
            community = await s.get(Community, sub.community_id) if sub.community_id else None
        routes: Routes
        if watcher is not None:
            routes = OutboxRoutes(watcher.out, watcher.actor)
            learner = watcher.actor.name
        else:
            channels = self.channels.get(user.platform)
            if channels is None:
                log.info(
                    "submission %d graded; its publication waits for %s", sub.id, user.platform
                )
                return
            routes, learner = (
                ChannelRoutes(channels, community, user.platform_id),
                user.display_name,
            )
        await self.publisher.publish(sub.id, graded, routes, learner=learner)

    async def publish_stored(self, sub: Submission) -> None:
        """Publish a grade a worker recorded (``bot.core.jobs``): through the learner's
        interaction when they wait in this process, else the platform's channels."""
        try:
            graded = graded_from(sub)
        except (ValueError, OSError) as exc:
            log.warning("submission %d: its report is unreadable: %s", sub.id, exc)
            return
        await self._publish(sub, graded, self.queue.watcher(sub.id))

    async def notify_interrupted(self, subs: list[Submission]) -> None:
        """Tell learners whose grade restarts interrupted too often (never drop one silently);
        an archive such a submission stored is removed."""
        for sub in subs:
            self._discard_upload(sub)
            async with self.store.session() as s:
                user = await s.get_one(User, sub.user_id)
                community = await s.get(Community, sub.community_id) if sub.community_id else None
            channels = self.channels.get(user.platform)
            if channels is None:
                continue
            try:
                await channels.dm(community, user.platform_id, views.interrupted(sub))
            except DeliveryFailed as exc:  # `results` shows the error all the same
                log.info("submission %d: interrupted; the learner was not told: %s", sub.id, exc)

    async def _finish(
        self,
        sub_id: int,
        *,
        graded: Graded | None = None,
        error: str | None = None,
        hosted: bool = False,
        logs_ref: str | None = None,
    ) -> None:
        async with self.store.session() as s:
            sub = await s.get_one(Submission, sub_id)
            sub.finished_at = self.clock()
            sub.hosted, sub.logs_ref = hosted, logs_ref
            if graded is None:
                sub.status, sub.error = "error", error
                return
            sub.status = "done"
            sub.score, sub.passed = graded.report.score, graded.report.passed
            sub.report = graded.report.to_dict()
            sub.report_dir = str(graded.out_dir)
            s.add(self.publisher.pending_row(sub_id))  # with the grade: a crash loses no result
