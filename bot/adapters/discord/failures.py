"""Discord's refusals turned into the coach's neutral delivery failures, with a reason an admin
can act on (which permission is missing, in which channel). The error codes are Discord's:
https://discord.com/developers/docs/topics/opcodes-and-status-codes#json-json-error-codes
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp
import discord

from bot.core.channels import MessageGone
from bot.core.outbox import DeliveryFailed, DirectMessageClosed, InteractionExpired

UNKNOWN_CHANNEL = 10003
UNKNOWN_MESSAGE = 10008
UNKNOWN_WEBHOOK = 10015
UNKNOWN_INTERACTION = 10062
MISSING_ACCESS = 50001
CANNOT_DM = 50007
MISSING_PERMISSIONS = 50013
INVALID_WEBHOOK_TOKEN = 50027
ARCHIVED_THREAD = 50083
LOCKED_THREAD = 160005
TOKEN_GONE = {UNKNOWN_WEBHOOK, UNKNOWN_INTERACTION, INVALID_WEBHOOK_TOKEN}

# What the bot needs where results go: the README's invite permissions, by discord.py name —
# https://discord.com/developers/docs/topics/permissions#permissions-bitwise-permission-flags
# (Create Message needs SEND_MESSAGES, in a thread SEND_MESSAGES_IN_THREADS, ATTACH_FILES for
# files: https://discord.com/developers/docs/resources/message#create-message).
POST = ("view_channel", "send_messages", "embed_links", "attach_files")
THREADS = ("create_public_threads", "send_messages_in_threads")
SETUP = POST + THREADS  # checked by `/admin channel` when it is set
IMPLIED = {  # what discord.py's permissions_for clears along with each
    "view_channel": set(SETUP) - {"view_channel"},
    "send_messages": {"embed_links", "attach_files"},
    "send_messages_in_threads": {"embed_links", "attach_files"},
}


def permission_name(flag: str) -> str:
    """``"send_messages_in_threads"`` → ``"Send Messages in Threads"`` (as Discord shows it)."""
    return " ".join(w if w == "in" else w.capitalize() for w in flag.split("_"))


def missing(channel: object, me: object, needs: tuple[str, ...]) -> list[str]:
    """The permissions of ``needs`` the bot (``me``, a Member) lacks in ``channel`` (from the
    gateway cache: channel overwrites and roles), by Discord's names."""
    perms = channel.permissions_for(me)  # type: ignore[attr-defined]
    lacking = [p for p in needs if not getattr(perms, p)]
    # Without View Channel nothing else counts, and without Send Messages (in Threads) the
    # permissions to embed and attach are cleared with it: name only what to grant.
    for root in ("view_channel", "send_messages", "send_messages_in_threads"):
        if root in lacking:
            implied = IMPLIED[root]
            lacking = [p for p in lacking if p == root or p not in implied]
    return [permission_name(p) for p in lacking]


@dataclass
class Where:
    """A channel as an admin reads it in a reason: ``#name`` when the cache knows it."""

    client: discord.Client
    channel_id: int | None
    label: str | None = None  # what to call it when the cache does not know it

    def channel(self) -> object | None:
        if self.channel_id is None:
            return None
        return self.client.get_channel(self.channel_id)

    def __str__(self) -> str:
        found = self.channel()
        if found is None:
            if self.label:
                return self.label
            return f"channel {self.channel_id}" if self.channel_id else "that channel"
        name = getattr(found, "name", None)
        return f"#{name}" if name else f"channel {self.channel_id}"

    def lacking(self, needs: tuple[str, ...]) -> list[str]:
        found = self.channel()
        guild = getattr(found, "guild", None)
        if found is None or guild is None or guild.me is None:
            return []
        return missing(found, guild.me, needs)


def failure(
    exc: BaseException, where: Where, *, needs: tuple[str, ...] = POST, dm: bool = False
) -> DeliveryFailed:
    """The neutral failure for ``exc`` raised by discord.py (or its HTTP session)."""
    if isinstance(exc, discord.RateLimited):
        return DeliveryFailed(
            "Discord is rate limiting the bot (429)", transient=True, retry_after=exc.retry_after
        )
    if isinstance(exc, (aiohttp.ClientError, asyncio.TimeoutError, OSError)):
        return DeliveryFailed(f"Discord did not answer ({type(exc).__name__})", transient=True)
    if not isinstance(exc, discord.HTTPException):
        return DeliveryFailed(f"unexpected {type(exc).__name__}", transient=True)
    code, status = exc.code, exc.status
    if status == 429:
        return DeliveryFailed(
            "Discord is rate limiting the bot (429, after the client's own retries)",
            transient=True,
            retry_after=_retry_after(exc),
        )
    if status >= 500:
        return DeliveryFailed(f"Discord failed ({status})", transient=True)
    if status == 401 or code in TOKEN_GONE:
        return InteractionExpired("the interaction's token expired (15 minutes)")
    if dm and code in (CANNOT_DM, MISSING_PERMISSIONS, MISSING_ACCESS):
        return DirectMessageClosed("the learner's private messages are closed to the bot")
    if code == CANNOT_DM:
        return DirectMessageClosed("the learner's private messages are closed to the bot")
    if code == MISSING_PERMISSIONS:
        lacking = where.lacking(needs)
        if not lacking and where.label:  # a thread the cache does not know: what it needs
            lacking = [permission_name(p) for p in needs if p.endswith("threads")]
        what = ", ".join(lacking) if lacking else "a permission"
        return DeliveryFailed(f"the bot lacks {what} in {where}")
    if code == MISSING_ACCESS:
        return DeliveryFailed(f"the bot cannot see {where} (View Channel)")
    if code == UNKNOWN_CHANNEL:
        return MessageGone(f"{where} no longer exists")
    if code == UNKNOWN_MESSAGE:
        return MessageGone(f"the message in {where} was deleted")
    if code == ARCHIVED_THREAD:
        return DeliveryFailed(f"{where} is archived")
    if code == LOCKED_THREAD:
        return DeliveryFailed(f"{where} is locked")
    return DeliveryFailed(f"Discord refused the message in {where}: {exc.text or status}")


def _retry_after(exc: discord.HTTPException) -> float | None:
    header = exc.response.headers.get("Retry-After") if exc.response is not None else None
    try:
        return float(header) if header is not None else None
    except ValueError:
        return None
