"""Posting outside an interaction (schedules, resumed grades): the ``Channels`` protocol that
each chat adapter implements, and the registry the coach finds them in."""

from __future__ import annotations

from typing import Protocol

from bot.core.message import Message
from bot.core.outbox import DeliveryFailed
from bot.store import Community


class MessageGone(DeliveryFailed):
    """``Channels.edit`` (or a post in its thread) found no message behind the ref (deleted,
    or its channel is gone)."""


class Channels(Protocol):
    """One chat platform's channels and DMs, reachable without an interaction.

    An adapter implements it over its long-lived client (Discord: the gateway client; Slack:
    the web client of the community's workspace; console: the terminal) and registers it
    with ``coach.channels.register(platform, channels)``. Every method may be called from any
    task of the bot's event loop, at any time after registration.

    - ``post`` sends ``message`` to ``channel_id`` (the community's channel when None), or into
      the thread under the message ``thread`` (a ref ``post`` returned earlier) — creating the
      thread if the platform needs one. ``ping`` asks to mention the community's ``ping_role``
      (daily posts, contest openings); without it nothing in the message may notify anyone.
      It returns a ref that ``edit`` and ``post(thread=…)`` accept later, in this process or
      after a restart (so it must be self-contained: Discord ``"<channel>/<message>"``, Slack
      ``"<channel>/<ts>"``). Any bundle secret must be masked, as for an Outbox's ``post``.
    - ``edit`` replaces the message behind ``ref`` (text, fields, buttons, files); it raises
      :class:`MessageGone` when that message no longer exists, so the caller posts anew.
    - ``dm`` sends a private message to the learner whose platform id is ``user_id`` (a
      ``User.platform_id``) and returns its ref; it raises
      :class:`bot.core.outbox.DirectMessageClosed` when the platform refuses.
    """

    async def post(
        self,
        community: Community,
        message: Message,
        *,
        channel_id: str | None = None,
        thread: str | None = None,
        ping: bool = False,
    ) -> str: ...

    async def edit(self, community: Community, ref: str, message: Message) -> None: ...

    async def dm(self, community: Community | None, user_id: str, message: Message) -> str: ...


class ChannelRegistry:
    """The ``Channels`` of each platform this process runs on."""

    def __init__(self) -> None:
        self._by_platform: dict[str, Channels] = {}

    def register(self, platform: str, channels: Channels) -> None:
        self._by_platform[platform] = channels

    def unregister(self, platform: str) -> None:
        self._by_platform.pop(platform, None)

    def get(self, platform: str) -> Channels | None:
        return self._by_platform.get(platform)

    def platforms(self) -> set[str]:
        return set(self._by_platform)
