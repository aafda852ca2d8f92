"""An Outbox that records what the coach sent where — the test adapter of the coach core."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from bot.core.message import Message
from bot.core.outbox import Actor, DeliveryFailed, DirectMessageClosed


@dataclass
class RecordingOutbox:
    """``refuse[kind]`` makes every ``post`` (``"thread"``: a post under a thread), ``reply``,
    ``edit`` or ``dm`` raise that failure, as a platform adapter would."""

    dms_closed: bool = False
    refuse: dict[str, DeliveryFailed] = field(default_factory=dict)
    posts: list[tuple[str, str | None, Message]] = field(default_factory=list)
    replies: list[tuple[str, Message]] = field(default_factory=list)
    dms: list[tuple[Actor, Message]] = field(default_factory=list)
    edits: list[tuple[str, Message]] = field(default_factory=list)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def _check(self, kind: str) -> None:
        if kind in self.refuse:
            raise self.refuse[kind]

    async def post(self, msg: Message, *, thread: str | None = None) -> str:
        self._check("post" if thread is None else "thread")
        ref = f"post-{next(self._ids)}"
        self.posts.append((ref, thread, msg))
        return ref

    async def reply(self, msg: Message) -> str:
        self._check("reply")
        ref = f"reply-{next(self._ids)}"
        self.replies.append((ref, msg))
        return ref

    async def edit(self, ref: str, msg: Message) -> None:
        self._check("edit")
        self.edits.append((ref, msg))

    async def dm(self, actor: Actor, msg: Message) -> str:
        if self.dms_closed:
            raise DirectMessageClosed(actor.id)
        self._check("dm")
        self.dms.append((actor, msg))
        return f"dm-{next(self._ids)}"

    def public_text(self) -> str:
        """Everything anyone in the channel could read."""
        return "\n".join(m.text() for _, _, m in self.posts)

    def private_text(self) -> str:
        return "\n".join(
            [m.text() for _, m in self.replies]
            + [m.text() for _, m in self.edits]
            + [m.text() for _, m in self.dms]
        )
