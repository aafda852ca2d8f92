"""The coach's Outbox for one Discord interaction: ephemeral replies, channel posts, DMs."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Any

import discord

from bot.adapters.discord.render import render
from bot.adapters.discord.views import button_view
from bot.core.message import Message
from bot.core.outbox import Actor, DirectMessageClosed
from bot.logs import SECRETS

log = logging.getLogger(__name__)

ORIGINAL = "@original"  # the deferred ("thinking…") response of the interaction
FOLLOWUP = "followup/"  # + message id: a later ephemeral follow-up
EDIT_EVERY_S = 1.0  # Discord rate-limits edits; progress in between is coalesced
THREAD_NAME = "Results and trade-offs"
NO_MENTIONS = discord.AllowedMentions.none()


def message_ref(channel_id: int, message_id: int) -> str:
    """The ref of a channel, thread or DM message: ``"<channel id>/<message id>"``."""
    return f"{channel_id}/{message_id}"


def parse_ref(ref: str, channel_id: int | None = None) -> tuple[int, int]:
    """``(channel id, message id)``; a bare message id means one in ``channel_id``."""
    head, _, tail = ref.rpartition("/")
    if not head:
        if channel_id is None:
            raise ValueError(f"message ref {ref!r} names no channel")
        return channel_id, int(tail)
    return int(head), int(tail)


def send_kwargs(msg: Message) -> dict[str, Any]:
    """Keyword arguments of ``send`` for ``msg``; nothing it carries may ping anyone."""
    rendered = render(msg)
    kwargs: dict[str, Any] = {"embeds": rendered.embeds, "allowed_mentions": NO_MENTIONS}
    if rendered.files:
        kwargs["files"] = rendered.files
    view = button_view(msg.buttons)
    if view is not None:
        kwargs["view"] = view
    return kwargs


def edit_kwargs(msg: Message) -> dict[str, Any]:
    """Keyword arguments of ``edit`` for ``msg``: embeds, attachments and buttons are replaced."""
    rendered = render(msg)
    return {
        "embeds": rendered.embeds,
        "attachments": rendered.files,
        "view": button_view(msg.buttons),
        "allowed_mentions": NO_MENTIONS,
    }


def public(msg: Message) -> Message:
    """The channel copy of ``msg``: any known secret is masked, so no bundle reaches a channel."""
    r = SECRETS.redact
    return replace(
        msg,
        title=r(msg.title),
        body=r(msg.body),
        fields=[replace(f, name=r(f.name), value=r(f.value)) for f in msg.fields],
        footer=r(msg.footer),
    )


class Threads:
    """The thread under each root message, created on first use; shared by a client's outboxes."""

    def __init__(self) -> None:
        self._known: dict[int, int] = {}
        self._locks: defaultdict[int, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def under(self, root: discord.PartialMessage) -> int:
        async with self._locks[root.id]:
            if root.id not in self._known:
                try:
                    thread = await root.fetch_thread()
                except discord.NotFound:
                    thread = await root.create_thread(name=THREAD_NAME, auto_archive_duration=1440)
                self._known[root.id] = thread.id
            return self._known[root.id]


@dataclass
class _Edits:
    """The edits of one message: serialised, progress coalesced to one per ``EDIT_EVERY_S``."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    latest: Message | None = None
    last: float = 0.0
    settled: bool = False  # a message without progress arrived: older progress is stale


def _in_progress(msg: Message) -> bool:
    return msg.progress is not None and msg.progress < 1.0


class DiscordOutbox:
    """Implements the coach's Outbox for one interaction (already deferred, ephemerally)."""

    def __init__(
        self, interaction: discord.Interaction, *, channel_id: int | None, threads: Threads
    ) -> None:
        self.interaction = interaction
        self.channel_id = channel_id  # where posts go: the community's channel
        self.threads = threads
        self._replied = False
        self._edits: defaultdict[str, _Edits] = defaultdict(_Edits)

    def _channel(self, channel_id: int) -> discord.PartialMessageable:
        return self.interaction.client.get_partial_messageable(
            channel_id, guild_id=self.interaction.guild_id
        )

    async def post(self, msg: Message, *, thread: str | None = None) -> str:
        if thread is not None:
            root_channel, root_id = parse_ref(thread, self.channel_id)
            channel_id = await self.threads.under(
                self._channel(root_channel).get_partial_message(root_id)
            )
        elif self.channel_id is not None:
            channel_id = self.channel_id
        else:
            raise ValueError("no channel to post in")
        sent = await self._channel(channel_id).send(**send_kwargs(public(msg)))
        return message_ref(channel_id, sent.id)

    async def reply(self, msg: Message) -> str:
        if not self._replied:
            self._replied = True
            await self.interaction.edit_original_response(**edit_kwargs(msg))
            return ORIGINAL
        sent = await self.interaction.followup.send(ephemeral=True, wait=True, **send_kwargs(msg))
        return FOLLOWUP + str(sent.id)

    async def edit(self, ref: str, msg: Message) -> None:
        """Best effort: a failed edit (an interaction past its 15 minutes…) is logged, so the
        use-case goes on to post its results."""
        edits = self._edits[ref]
        if _in_progress(msg):
            edits.latest = msg
        else:
            edits.settled = True
        async with edits.lock:
            if _in_progress(msg):
                delay = edits.last + EDIT_EVERY_S - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if edits.settled or edits.latest is not msg:
                    return  # superseded while waiting
            try:
                await self._apply(ref, msg)
            except discord.HTTPException as exc:
                log.warning("edit of %s failed: %s", ref, exc)
            edits.last = time.monotonic()

    async def _apply(self, ref: str, msg: Message) -> None:
        kwargs = edit_kwargs(msg)
        if ref == ORIGINAL:
            await self.interaction.edit_original_response(**kwargs)
        elif ref.startswith(FOLLOWUP):
            await self.interaction.followup.edit_message(int(ref.removeprefix(FOLLOWUP)), **kwargs)
        else:
            channel_id, message_id = parse_ref(ref, self.channel_id)
            await self._channel(channel_id).get_partial_message(message_id).edit(**kwargs)

    async def dm(self, actor: Actor, msg: Message) -> str:
        user = self.interaction.user
        if str(user.id) != actor.id:
            user = await self.interaction.client.fetch_user(int(actor.id))
        try:
            channel = await user.create_dm()
            sent = await channel.send(**send_kwargs(msg))
        except discord.Forbidden as exc:
            raise DirectMessageClosed(actor.id) from exc
        return message_ref(channel.id, sent.id)
