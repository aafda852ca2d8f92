"""The daily post of each community, at its local post time, made once per local day.

The day a post belongs to is the local date of the latest post time at or before *now*, so a
post made late (a restart, a misfire) is still the right day's; it is made only within
``grace`` of its time, and never twice: the ``DailyPost`` record of (community, day) is checked
under a per-community lock before posting, and with ``firings`` the post is claimed in the
store first, so replicas that all fire it make it once (``bot.core.firings``). The one window
left is a crash between the platform accepting the post and its record being written
(milliseconds).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from contextlib import AbstractAsyncContextManager, nullcontext
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from bot.core import views
from bot.core.channels import ChannelRegistry
from bot.core.clock import Clock, utcnow
from bot.core.communities import Communities
from bot.core.firings import Firings
from bot.store import Community
from challenges.catalog import Catalog

log = logging.getLogger(__name__)


def daily_job(community: Community) -> str:
    """The name of a community's daily-post firing: ``<platform>/daily:<id>``."""
    return f"{community.platform}/daily:{community.id}"


def post_clock(community: Community) -> tuple[int, int]:
    hour, minute = community.post_time.split(":")
    return int(hour), int(minute)


def latest_post_time(community: Community, now: datetime) -> datetime:
    """The community's most recent post time at or before ``now`` (aware, local zone)."""
    zone = ZoneInfo(community.timezone)
    local = now.astimezone(zone)
    at = datetime.combine(local.date(), time(*post_clock(community)), tzinfo=zone)
    if at > local:
        at = datetime.combine(local.date() - timedelta(days=1), time(*post_clock(community)), zone)
    return at


class DailyPoster:
    def __init__(
        self,
        communities: Communities,
        catalog: Catalog,
        channels: ChannelRegistry,
        *,
        grace: timedelta,
        clock: Clock = utcnow,
        firings: Firings | None = None,
    ) -> None:
        self.firings = firings
        self.communities = communities
        self.catalog = catalog
        self.channels = channels
        self.grace = grace
        self.clock = clock
        self._locks: defaultdict[int, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def run(self, community_id: int) -> str | None:
        """Make the community's due post, if any; its ref, or None when nothing was due."""
        community = await self.communities.by_id(community_id)
        if community is None or not community.channel_id:
            return None
        channels = self.channels.get(community.platform)
        if channels is None:
            return None
        now = self.clock()
        due = latest_post_time(community, now)
        if now - due > self.grace:
            log.info("daily post of %s at %s missed beyond the grace window", community.id, due)
            return None
        day = due.date()
        async with self._locks[community.id]:
            if await self.communities.daily_post(community.id, day) is not None:
                return None
            async with self._once(community, due) as mine:
                if not mine:
                    return None  # another process makes it (or made it)
                challenge = self.catalog.for_day(day)
                message = views.daily_post(challenge, datetime.combine(day, time()))
                ref = await channels.post(community, message, ping=True)
                await self.communities.record_daily_post(
                    community.id, day, challenge.id, community.channel_id, ref
                )
        log.info("daily post of %s for %s: %s", community.id, day, challenge.id)
        return ref

    def _once(self, community: Community, due: datetime) -> AbstractAsyncContextManager[bool]:
        if self.firings is None:
            return nullcontext(True)
        return self.firings.once(daily_job(community), due)

    async def catch_up(self) -> list[str]:
        """At start-up: every post due within the grace window and not made yet."""
        made = []
        for community in await self.communities.all():
            if community.platform not in self.channels.platforms():
                continue
            try:
                ref = await self.run(community.id)
            except Exception:  # one community's platform refusing must not stop the bot
                log.exception("catch-up daily post failed for community %s", community.id)
                continue
            if ref is not None:
                made.append(ref)
        return made
