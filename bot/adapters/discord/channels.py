"""The coach's ``Channels`` on Discord: posts, edits and DMs through the client, without an
interaction (daily posts, contests, boards, grades resumed after a restart)."""

from __future__ import annotations

from typing import Any

import discord

from bot.adapters.discord.outbox import (
    Threads,
    edit_kwargs,
    message_ref,
    parse_ref,
    public,
    send_kwargs,
)
from bot.core.channels import MessageGone
from bot.core.message import Message
from bot.core.outbox import DirectMessageClosed
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
    """Refs are ``"<channel id>/<message id>"`` (a bare message id means the community's channel)."""

    def __init__(self, client: discord.Client, threads: Threads) -> None:
        self.client = client
        self.threads = threads

    def _channel(self, community: Community, channel_id: int) -> discord.PartialMessageable:
        return self.client.get_partial_messageable(channel_id, guild_id=int(community.platform_id))

    def _home(self, community: Community, channel_id: str | None) -> int:
        channel = channel_id or community.channel_id
        if not channel:
            raise ValueError(f"{community.name or community.platform_id} has no channel set")
        return int(channel)

    async def post(
        self,
        community: Community,
        message: Message,
        *,
        channel_id: str | None = None,
        thread: str | None = None,
        ping: bool = False,
    ) -> str:
        target = self._home(community, channel_id)
        if thread is not None:
            root_channel, root_id = parse_ref(thread, target)
            root = self._channel(community, root_channel).get_partial_message(root_id)
            target = await self.threads.under(root)
        kwargs = send_kwargs(public(message))
        if ping and community.ping_role:
            kwargs |= ping_kwargs(community.ping_role)
        sent = await self._channel(community, target).send(**kwargs)
        return message_ref(target, sent.id)

    async def edit(self, community: Community, ref: str, message: Message) -> None:
        channel_id, message_id = parse_ref(ref, int(community.channel_id or 0) or None)
        partial = self._channel(community, channel_id).get_partial_message(message_id)
        try:
            await partial.edit(**edit_kwargs(public(message)))
        except discord.NotFound as exc:
            raise MessageGone(ref) from exc

    async def dm(self, community: Community | None, user_id: str, message: Message) -> str:
        try:
            channel = await self.client.create_dm(discord.Object(int(user_id)))
            sent = await channel.send(**send_kwargs(message))
        except discord.Forbidden as exc:
            raise DirectMessageClosed(user_id) from exc
        return message_ref(channel.id, sent.id)
