"""One self-updating leaderboard message per channel: posted once, then edited after grades.

Its ref is kept in the store (``LeaderboardMessage``), so a restart edits the same message; a
message someone deleted is posted anew. Edits are coalesced: at most one refresh per
``min_interval``, however many grades finish meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta

from sqlalchemy import delete, select

from bot.core.channels import ChannelRegistry, Channels, MessageGone
from bot.core.clock import Clock, utcnow
from bot.core.errors import CoachError
from bot.core.message import Message
from bot.store import Community, LeaderboardMessage, Store

log = logging.getLogger(__name__)

Render = Callable[[Community, str], Awaitable[Message]]  # (community, scope) → the board


class BoardPosts:
    def __init__(
        self,
        store: Store,
        channels: ChannelRegistry,
        render: Render,
        *,
        min_interval: timedelta,
        clock: Clock = utcnow,
    ) -> None:
        self.store = store
        self.channels = channels
        self.render = render
        self.min_interval = min_interval.total_seconds()
        self.clock = clock
        self._pending: asyncio.Task[None] | None = None
        self._last = 0.0
        self._lock = asyncio.Lock()

    async def place(self, community: Community, scope: str, channel_id: str | None = None) -> str:
        """Show the ``scope`` board in the channel: edit its board message, or post one."""
        channel = channel_id or community.channel_id
        if not channel:
            raise CoachError("no channel: set the community's channel first, or name one")
        channels = self._channels(community)
        message = await self.render(community, scope)
        async with self._lock, self.store.session() as s:
            record = await s.scalar(
                select(LeaderboardMessage).where(
                    LeaderboardMessage.community_id == community.id,
                    LeaderboardMessage.channel_id == channel,
                )
            )
            if record is None:
                record = LeaderboardMessage(community_id=community.id, channel_id=channel)
                s.add(record)
            record.scope, record.updated_at = scope, self.clock()
            record.message_ref = await self._show(channels, community, record, message)
            return record.message_ref

    async def refresh(self) -> int:
        """Edit every board message of the platforms this process runs; how many were shown."""
        shown = 0
        async with self._lock:
            async with self.store.session() as s:
                records = list(await s.scalars(select(LeaderboardMessage)))
                communities = {c.id: c for c in await s.scalars(select(Community))}
            rendered: dict[tuple[int, str], Message] = {}
            for record in records:
                community = communities[record.community_id]
                channels = self.channels.get(community.platform)
                if channels is None:
                    continue
                key = (community.id, record.scope)
                if key not in rendered:
                    rendered[key] = await self.render(community, record.scope)
                try:
                    ref = await self._show(channels, community, record, rendered[key])
                except Exception:
                    log.warning(
                        "could not update the board in %s", record.channel_id, exc_info=True
                    )
                    continue
                async with self.store.session() as s:
                    row = await s.get_one(LeaderboardMessage, record.id)
                    row.message_ref, row.updated_at = ref, self.clock()
                shown += 1
        self._last = asyncio.get_running_loop().time()
        return shown

    async def forget(self, community_id: int) -> int:
        """Stop showing boards in the community (it removed the bot): its board messages are
        no longer refreshed. Waits for a refresh under way to end first. How many were kept."""
        async with self._lock, self.store.session() as s:
            result = await s.execute(
                delete(LeaderboardMessage).where(LeaderboardMessage.community_id == community_id)
            )
        return int(getattr(result, "rowcount", 0) or 0)

    def touch(self) -> None:
        """Something changed: refresh soon (once, however many touches arrive meanwhile)."""
        if self._pending is not None and not self._pending.done():
            return
        self._pending = asyncio.get_running_loop().create_task(self._refresh_later())

    async def close(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            await asyncio.gather(self._pending, return_exceptions=True)

    async def _refresh_later(self) -> None:
        wait = self._last + self.min_interval - asyncio.get_running_loop().time()
        if wait > 0:
            await asyncio.sleep(wait)
        try:
            await self.refresh()
        except Exception:
            log.exception("leaderboard refresh failed")

    async def _show(
        self,
        channels: Channels,
        community: Community,
        record: LeaderboardMessage,
        message: Message,
    ) -> str:
        if record.message_ref:
            try:
                await channels.edit(community, record.message_ref, message)
                return record.message_ref
            except MessageGone:
                log.info("board message %s is gone; posting it anew", record.message_ref)
        return await channels.post(community, message, channel_id=record.channel_id)

    def _channels(self, community: Community) -> Channels:
        channels = self.channels.get(community.platform)
        if channels is None:
            raise CoachError(f"the bot cannot post on {community.platform} from here")
        return channels
