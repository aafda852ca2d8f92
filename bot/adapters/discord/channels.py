"""The coach's ``Channels`` on Discord: posts, edits and DMs through the client, without an
interaction (daily posts, contests, boards, grades resumed after a restart)."""

from __future__ import annotations

from typing import Any

import discord

from bot.adapters.discord.outbox import (
    Threads,
    direct_message,
    edit_kwargs,
    edit_message,
    parse_ref,
    public,
    send,
    send_kwargs,
)
from bot.core.message import Message
from bot.store import Community


def ping_kwargs(role_id: str) -> dict[str, Any]:
    """Mention ``role_id`` — and nothing else — in a post."""
    role = discord.Object(int(role_id))
    return {
        "content": f"<@&{role.id}>",
        "allowed_mentions": discord.AllowedMentions(
            everyone=False, users=False, roles=[role], replied_user=False
        ),
    }


class DiscordChannels:
    """Refs are ``"<channel id>/<message id>"`` (a bare message id means the community's channel).
    Every refusal is a :class:`~bot.core.outbox.DeliveryFailed` naming what an admin can fix."""

    def __init__(self, client: discord.Client, threads: Threads) -> None:
        self.client = client
        self.threads = threads

    def _home(self, community: Community, channel_id: str | None) -> int | None:
        channel = channel_id or community.channel_id
        return int(channel) if channel else None

    async def post(
        self,
        community: Community,
        message: Message,
        *,
        channel_id: str | None = None,
        thread: str | None = None,
        ping: bool = False,
    ) -> str:
        kwargs = send_kwargs(public(message))
        if ping and community.ping_role:
            kwargs |= ping_kwargs(community.ping_role)
        home = self._home(community, channel_id)
        guild_id = int(community.platform_id)
        return await send(self.client, guild_id, self.threads, home, thread, kwargs)

    async def edit(self, community: Community, ref: str, message: Message) -> None:
        channel_id, message_id = parse_ref(ref, self._home(community, None))
        kwargs = edit_kwargs(public(message))
        await edit_message(self.client, int(community.platform_id), channel_id, message_id, kwargs)

    async def dm(self, community: Community | None, user_id: str, message: Message) -> str:
        return await direct_message(self.client, int(user_id), send_kwargs(message))
