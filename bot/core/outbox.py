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


class DirectMessageClosed(Exception):
    """The platform refused a DM; the coach falls back to a private reply."""
