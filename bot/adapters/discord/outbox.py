"""The coach's Outbox for one Discord interaction: ephemeral replies, channel posts, DMs."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, TypeVar

import discord

from bot.adapters.discord.failures import POST, THREADS, Where, failure
from bot.adapters.discord.render import render
from bot.adapters.discord.views import button_view
from bot.core.channels import MessageGone
from bot.core.message import Message
from bot.core.outbox import Actor, DeliveryFailed, DirectMessageClosed, InteractionExpired
from bot.logs import SECRETS

T = TypeVar("T")

log = logging.getLogger(__name__)

ORIGINAL = "@original"  # the deferred ("thinking…") response of the interaction
FOLLOWUP = "followup/"  # + message id: a later ephemeral follow-up
EDIT_EVERY_S = 1.0  # Discord rate-limits edits; progress in between is coalesced
THREAD_NAME = "Results and trade-offs"
THREAD_EXISTS = 160004  # "A thread has already been created for this message"
NO_MENTIONS = discord.AllowedMentions.none()
# "Interaction tokens are valid for 15 minutes" —
# https://discord.com/developers/docs/interactions/receiving-and-responding#followup-messages
TOKEN_VALID = timedelta(minutes=15)
TOKEN_MARGIN = timedelta(minutes=1)  # stop before it expires: refused calls count as invalid
# requests (10,000 per 10 minutes bans the bot's IP) —
# https://discord.com/developers/docs/topics/rate-limits#invalid-request-limit-aka-cloudflare-bans
IN_THREAD = ("view_channel", "send_messages_in_threads", "embed_links", "attach_files")


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
                # Create first: the usual case needs one call and no refusal (refused calls
                # count against the invalid request limit); one made earlier answers 160004.
                try:
                    thread = await root.create_thread(name=THREAD_NAME, auto_archive_duration=1440)
                except discord.HTTPException as exc:
                    if exc.code != THREAD_EXISTS:
                        raise
                    thread = await root.fetch_thread()
                self._known[root.id] = thread.id
            return self._known[root.id]

    def forget(self, root_id: int) -> None:
        """The thread is gone: look it up (or create it) again next time."""
        self._known.pop(root_id, None)


async def send(
    client: discord.Client,
    guild_id: int | None,
    threads: Threads,
    channel_id: int | None,
    thread: str | None,
    kwargs: dict[str, Any],
) -> str:
    """Send in ``channel_id``, or in the thread under the message ``thread`` (created when
    needed); returns the new message's ref. Raises :class:`DeliveryFailed` with the reason
    (the missing permission and where, a deleted post, an archived or locked thread…)."""

    def channel(cid: int) -> discord.PartialMessageable:
        return client.get_partial_messageable(cid, guild_id=guild_id)

    target, needs, root = channel_id, POST, None
    if thread is not None:
        root_channel, root = parse_ref(thread, channel_id)
        try:
            target = await threads.under(channel(root_channel).get_partial_message(root))
        except Exception as exc:
            raise failure(exc, Where(client, root_channel), needs=THREADS) from exc
        needs = IN_THREAD
    if target is None:
        raise DeliveryFailed("no results channel is set here (an admin sets one: /admin channel)")
    try:
        sent = await channel(target).send(**kwargs)
    except Exception as exc:
        label = "the results thread under that post" if root is not None else None
        failed = failure(exc, Where(client, target, label), needs=needs)
        if root is not None and isinstance(failed, MessageGone):
            threads.forget(root)  # the thread was deleted: a new one next time
        raise failed from exc
    return message_ref(target, sent.id)


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
    """Implements the coach's Outbox for one interaction (already deferred, ephemerally).

    The interaction's token is used only while it is valid (see ``TOKEN_VALID``), less a margin,
    and never again once Discord refused it (401, or 50027 *Invalid Webhook Token*): ``reply``
    then raises :class:`InteractionExpired`, and the progress message continues in a DM (edited
    through the bot's own token), so a long wait in the queue still reaches the learner.
    """

    def __init__(
        self, interaction: discord.Interaction, *, channel_id: int | None, threads: Threads
    ) -> None:
        self.interaction = interaction
        self.channel_id = channel_id  # where posts go: the community's channel
        self.threads = threads
        self._replied = False
        self._token_dead = False
        self._moved: dict[str, str | None] = {}  # interaction ref -> its DM copy (None: closed)
        self._edits: defaultdict[str, _Edits] = defaultdict(_Edits)

    @property
    def client(self) -> discord.Client:
        return self.interaction.client

    def token_usable(self) -> bool:
        """True while the interaction's token may still be used."""
        if self._token_dead:
            return False
        age = discord.utils.utcnow() - self.interaction.created_at
        return age < TOKEN_VALID - TOKEN_MARGIN

    async def _token(self, call: Awaitable[T]) -> T:
        """A call through the interaction's token; it dies for good on 401/50027."""
        if not self.token_usable():
            if asyncio.iscoroutine(call):
                call.close()
            raise InteractionExpired("the interaction is too old to answer (15 minutes)")
        try:
            return await call
        except Exception as exc:
            failed = failure(exc, Where(self.client, self.interaction.channel_id))
            if isinstance(failed, InteractionExpired):
                self._token_dead = True
            raise failed from exc

    async def post(self, msg: Message, *, thread: str | None = None) -> str:
        return await send(
            self.client,
            self.interaction.guild_id,
            self.threads,
            self.channel_id,
            thread,
            send_kwargs(public(msg)),
        )

    async def reply(self, msg: Message) -> str:
        if not self._replied:
            await self._token(self.interaction.edit_original_response(**edit_kwargs(msg)))
            self._replied = True
            return ORIGINAL
        sent = await self._token(
            self.interaction.followup.send(ephemeral=True, wait=True, **send_kwargs(msg))
        )
        return FOLLOWUP + str(sent.id)

    async def edit(self, ref: str, msg: Message) -> None:
        """Best effort: a refused edit is logged, so the use-case goes on to its results."""
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
            except DeliveryFailed as exc:
                log.warning("edit of %s failed: %s", ref, exc.reason)
            edits.last = time.monotonic()

    async def _apply(self, ref: str, msg: Message) -> None:
        kwargs = edit_kwargs(msg)
        if ref == ORIGINAL or ref.startswith(FOLLOWUP):
            if self.token_usable():
                try:
                    if ref == ORIGINAL:
                        await self._token(self.interaction.edit_original_response(**kwargs))
                    else:
                        message_id = int(ref.removeprefix(FOLLOWUP))
                        await self._token(
                            self.interaction.followup.edit_message(message_id, **kwargs)
                        )
                    return
                except InteractionExpired:
                    pass
            await self._in_dm(ref, msg)
            return
        channel_id, message_id = parse_ref(ref, self.channel_id)
        await edit_message(self.client, self.interaction.guild_id, channel_id, message_id, kwargs)

    async def _in_dm(self, ref: str, msg: Message) -> None:
        """The interaction's message, continued in a DM once its token is over."""
        if ref not in self._moved:
            user = self.interaction.user
            try:
                self._moved[ref] = await self.dm(Actor("discord", str(user.id), user.name), msg)
            except DirectMessageClosed:
                self._moved[ref] = None
                log.info(
                    "progress of interaction %s: token over and DMs closed", self.interaction.id
                )
            return
        moved = self._moved[ref]
        if moved is not None:
            channel_id, message_id = parse_ref(moved)
            await edit_message(self.client, None, channel_id, message_id, edit_kwargs(msg))

    async def dm(self, actor: Actor, msg: Message) -> str:
        return await direct_message(self.client, int(actor.id), send_kwargs(msg))


async def edit_message(
    client: discord.Client,
    guild_id: int | None,
    channel_id: int,
    message_id: int,
    kwargs: dict[str, Any],
) -> None:
    """Edit a message through the bot's token; raises :class:`DeliveryFailed` (``MessageGone``
    when it was deleted)."""
    partial = client.get_partial_messageable(channel_id, guild_id=guild_id)
    try:
        await partial.get_partial_message(message_id).edit(**kwargs)
    except Exception as exc:
        raise failure(exc, Where(client, channel_id)) from exc


async def direct_message(client: discord.Client, user_id: int, kwargs: dict[str, Any]) -> str:
    """A DM to ``user_id``; raises :class:`DirectMessageClosed` when Discord refuses (50007)."""
    try:
        channel = await client.create_dm(discord.Object(user_id))
        sent = await channel.send(**kwargs)
    except Exception as exc:
        raise failure(exc, Where(client, None), dm=True) from exc
    return message_ref(channel.id, sent.id)
