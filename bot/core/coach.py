"""The coach's use-cases. Adapters turn platform events into these calls."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import select

from bot.config import Settings
from bot.core import boards, views
from bot.core.boardposts import BoardPosts
from bot.core.channels import ChannelRegistry
from bot.core.clock import Clock, utcnow
from bot.core.communities import Communities, check_timezone
from bot.core.contests import Contests
from bot.core.env_commands import EnvironmentCommands
from bot.core.errors import CoachError
from bot.core.firings import Firings
from bot.core.grader import Grader
from bot.core.grading_flow import GradingFlow
from bot.core.hosted import HostedGrader
from bot.core.message import Message
from bot.core.outbox import Actor
from bot.core.publish import Publisher
from bot.core.queue import make_queue
from bot.core.ratelimit import RateLimiter
from bot.core.result_commands import ResultCommands
from bot.store import Store, User
from challenges.catalog import Catalog, Challenge, ChallengeError
from provisioning.manager import Provisioner

__all__ = ["Coach", "CoachError"]


class Coach(EnvironmentCommands, GradingFlow, ResultCommands):
    """The use-cases a chat adapter calls, by concern: the catalog and learners here;
    environments (:mod:`bot.core.env_commands`), grading (:mod:`bot.core.grading_flow`) and
    results (:mod:`bot.core.result_commands`)."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        catalog: Catalog,
        provisioner: Provisioner,
        grader: Grader,
        *,
        clock: Clock = utcnow,
    ) -> None:
        self.settings = settings
        self.store = store
        self.catalog = catalog
        self.provisioner = provisioner
        self.grader = grader
        self.clock = clock
        # Code submissions: built and run in a sandbox next to the learner's environment.
        policy = getattr(grader, "policy", None)
        self.hosted: HostedGrader | None = (
            HostedGrader(grader, settings.data_dir, policy) if policy is not None else None
        )
        self.communities = Communities(store)
        self.channels = ChannelRegistry()
        self.publisher = Publisher(store, self.channels, clock=clock)
        self.limits = RateLimiter(settings.commands_per_minute, settings.command_burst)
        self.queue = make_queue(
            settings,
            store,
            engine={
                "publish": self.publish_stored,
                "interrupted": self.notify_interrupted,
                "tell": lambda sub, msg: self._tell_privately(sub, None, msg),
                "platforms": self.channels.platforms,
                "environments": {
                    "make": self._make_environment_for,
                    "destroy": self.destroy_environment,
                    "forget": self._forget_environment,
                    "reap_here": self.reap_environments,
                },
            },
            limit=settings.queue_limit,
            concurrency=settings.grading_concurrency,
            execute=self._grade,
            show_position=lambda sub, n: views.queued(sub.challenge, n),
            on_settled=self._settled,
            clock=clock,
            max_attempts=settings.grading_max_attempts,
        )
        # schedule firings claimed once across the processes over this store
        self.firings = Firings(store, lease=settings.schedule_lease, clock=clock)
        self.contests = Contests(
            store,
            catalog,
            self.channels,
            reminder_before=settings.contest_reminder,
            clock=clock,
            firings=self.firings,
        )
        self._boards = boards.BoardCache()
        self.boards = BoardPosts(
            store,
            self.channels,
            self.board,
            min_interval=settings.leaderboard_refresh,
            clock=clock,
        )

    async def close(self) -> None:
        """Stop grading (unfinished grades resume at the next start) and board refreshes."""
        await self.queue.stop()
        await self.boards.close()

    # -- catalog ------------------------------------------------------------------------
    def challenge(self, challenge_id: str) -> Challenge:
        try:
            return self.catalog.get(challenge_id)
        except ChallengeError as exc:
            raise CoachError(str(exc)) from None

    def today(self, day: date | None = None) -> Message:
        day = day or self.clock().date()
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

    async def set_privacy(self, actor: Actor, public: bool) -> Message:
        """Show (``public``) or hide the learner on public boards and contest standings."""
        user = await self.user(actor)
        async with self.store.session() as s:
            (await s.get_one(User, user.id)).public = public
        self._boards.clear()
        if public:
            return Message(title="Privacy", body="You are shown on public leaderboards.")
        return Message(
            title="Privacy",
            body="You are hidden from public leaderboards and contest standings; "
            "your results stay yours (`results`).",
        )

    async def set_timezone(self, actor: Actor, timezone: str) -> Message:
        """The learner's own timezone: the days their streak counts in."""
        try:
            check_timezone(timezone)
        except ValueError as exc:
            raise CoachError(str(exc)) from None
        user = await self.user(actor)
        async with self.store.session() as s:
            (await s.get_one(User, user.id)).timezone = timezone
        return Message(title="Timezone", body=f"Your days (and streak) now follow {timezone}.")

    @staticmethod
    def owner(actor: Actor) -> str:
        return f"{actor.platform}:{actor.id}"
