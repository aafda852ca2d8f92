"""Where the coach's messages go; each chat adapter implements this."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from bot.core.message import Message


@dataclass(frozen=True)
class Actor:
    """The learner behind a command, as the platform names them."""

    platform: str
    id: str
    name: str


class Outbox(Protocol):
    async def post(self, msg: Message, *, thread: str | None = None) -> str:
        """Post in the channel (or in the thread under message ``thread``); return its ref."""

    async def reply(self, msg: Message) -> str:
        """Answer the command, visible to the invoking learner only; return its ref."""

    async def edit(self, ref: str, msg: Message) -> None:
        """Replace a message posted earlier (progress)."""

    async def dm(self, actor: Actor, msg: Message) -> str:
        """A private message; raises :class:`DirectMessageClosed` when the learner's DMs are shut."""


class DeliveryFailed(Exception):
    """The platform refused a post, an edit or a DM.

    ``reason`` is what the learner or an admin can act on ("the bot lacks *Send Messages* in
    #daily", "the channel was deleted"), never a secret. ``transient`` is true when the same
    call may succeed later (a 429 after the client's own retries, a 5xx, a timeout):
    the caller retries later, while a permanent refusal moves on to the next route.
    ``retry_after`` (seconds) is the platform's hint, when it gave one.
    """

    def __init__(
        self, reason: str, *, transient: bool = False, retry_after: float | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient
        self.retry_after = retry_after


class DirectMessageClosed(DeliveryFailed):
    """The platform refused a DM (the learner's DMs are shut); the coach falls back to a private
    reply or another route."""


class InteractionExpired(DeliveryFailed):
    """The interaction's token can no longer be used (Discord: 15 minutes after the
    interaction; Slack: a ``response_url`` after 30 minutes or 5 uses); the caller continues
    through the channels (DM, channel) instead."""
