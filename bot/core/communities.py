"""Per-community configuration (channel, post time, timezone) and the record of daily posts."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from datetime import date
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select

from bot.core.message import Field, Message
from bot.store import Community, DailyPost, Store

log = logging.getLogger(__name__)
HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


class ConfigError(ValueError):
    """An admin setting that cannot be used, with the reason."""


def check_post_time(text: str) -> str:
    if not HHMM.match(text):
        raise ConfigError(f"{text!r} is not a time like 09:00 (24-hour HH:MM)")
    return text


def check_timezone(text: str) -> str:
    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{text!r} is not a timezone like Europe/Paris or UTC") from None
    return text


Listener = Callable[[Community], Awaitable[None]]


class Communities:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._listeners: list[Listener] = []

    def on_change(self, listener: Listener) -> None:
        """Call ``listener`` after every configuration change (the scheduler re-plans)."""
        self._listeners.append(listener)

    def off_change(self, listener: Listener) -> None:
        self._listeners.remove(listener)

    async def by_id(self, community_id: int) -> Community | None:
        async with self.store.session() as s:
            return await s.get(Community, community_id)

    async def get(self, platform: str, platform_id: str, name: str = "") -> Community:
        async with self.store.session() as s:
            found = await s.scalar(
                select(Community).where(
                    Community.platform == platform, Community.platform_id == platform_id
                )
            )
            if found is None:
                found = Community(platform=platform, platform_id=platform_id, name=name)
                s.add(found)
                await s.flush()
            elif name and found.name != name:
                found.name = name
            return found

    async def all(self, platform: str | None = None) -> list[Community]:
        async with self.store.session() as s:
            q = select(Community).order_by(Community.id)
            if platform:
                q = q.where(Community.platform == platform)
            return list(await s.scalars(q))

    async def configure(
        self,
        community_id: int,
        *,
        channel_id: str | None = None,
        post_time: str | None = None,
        timezone: str | None = None,
        ping_role: str | None = None,
    ) -> Community:
        """Change the given settings (validated first: nothing changes on a bad value)."""
        if post_time is not None:
            check_post_time(post_time)
        if timezone is not None:
            check_timezone(timezone)
        async with self.store.session() as s:
            c = await s.get_one(Community, community_id)
            if channel_id is not None:
                c.channel_id = channel_id
            if post_time is not None:
                c.post_time = post_time
            if timezone is not None:
                c.timezone = timezone
            if ping_role is not None:
                c.ping_role = ping_role or None
        await self._notify(c)
        return c

    async def deactivate(self, community_id: int) -> Community:
        """The community removed the bot (Slack: the app was uninstalled or its token revoked).

        It is left inactive: no channel and no group to ping, so the scheduler drops its daily
        post (the change listeners hear of it). Its learners' results stay. Setting a channel
        again makes it active again. Contests and boards are the caller's to end
        (``Contests.cancel``, which unplans their announcements; ``BoardPosts.forget``).
        """
        async with self.store.session() as s:
            c = await s.get_one(Community, community_id)
            c.channel_id, c.ping_role = None, None
        log.info("community %s (%s) is inactive", c.id, c.name or c.platform_id)
        await self._notify(c)
        return c

    async def _notify(self, c: Community) -> None:
        for listener in list(self._listeners):
            try:
                await listener(c)
            except Exception:
                log.exception("a listener of %s's settings failed", c.name or c.platform_id)

    async def daily_post(self, community_id: int, day: date) -> DailyPost | None:
        async with self.store.session() as s:
            return await s.scalar(
                select(DailyPost).where(
                    DailyPost.community_id == community_id, DailyPost.day == day.isoformat()
                )
            )

    async def record_daily_post(
        self, community_id: int, day: date, challenge: str, channel_id: str, message_ref: str
    ) -> DailyPost:
        """Record the day's post (completing an unfinished record of it, if one exists)."""
        async with self.store.session() as s:
            post = await s.scalar(
                select(DailyPost).where(
                    DailyPost.community_id == community_id, DailyPost.day == day.isoformat()
                )
            )
            if post is None:
                post = DailyPost(community_id=community_id, day=day.isoformat())
                s.add(post)
            post.challenge, post.channel_id, post.message_ref = challenge, channel_id, message_ref
            return post


def settings_message(c: Community) -> Message:
    return Message(
        title="Cruscible settings",
        fields=[
            Field("Channel", c.channel_id or "not set"),
            Field("Daily post", f"{c.post_time} {c.timezone}"),
            Field("Role to ping", c.ping_role or "none"),
        ],
    )
