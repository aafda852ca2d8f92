"""The coach's ``Channels`` on Slack: posts, edits and DMs through the web client of the
community's workspace, without an interaction (daily posts, contests, boards, grades resumed
after a restart). Refs are ``"<channel>/<ts>"``; a bare ts means the community's channel."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from slack_sdk.errors import SlackTokenRotationError
from slack_sdk.web.async_client import AsyncWebClient

from bot.adapters.slack.blocks import MAX_BLOCKS, fallback_text, section, to_blocks
from bot.adapters.slack.failures import delivering, failure
from bot.adapters.slack.outbox import (
    direct_message,
    message_ref,
    parse_ref,
    redacted,
    share_files,
)
from bot.core.message import Message
from bot.core.outbox import DeliveryFailed, DirectMessageClosed
from bot.store import Community

log = logging.getLogger(__name__)

PLATFORM = "slack"
ClientFor = Callable[[str], Awaitable[AsyncWebClient]]


def mention(group_id: str) -> str:
    """The mrkdwn that notifies the members of user group ``group_id``."""
    return f"<!subteam^{group_id}>"


def team_of_user(user_id: str) -> str:
    """The workspace of a ``User.platform_id`` (``"<team>:<user>"``)."""
    return user_id.rpartition(":")[0]


class SlackChannels:
    """``client_for(team_id)`` is the web client of a workspace (``SlackBot.client_for``: the
    installation's bot token with OAuth, else the one bot client; LookupError when the app is
    not installed there).

    Refusals are the coach's neutral failures (:mod:`bot.adapters.slack.failures`): a post
    raises :class:`DeliveryFailed` (:class:`MessageGone` when its thread was deleted), an edit
    :class:`MessageGone` when the message or its channel is gone, a DM
    :class:`DirectMessageClosed`; each is ``transient`` when Slack was only busy.
    """

    def __init__(self, client_for: ClientFor) -> None:
        self.client_for = client_for

    def _home(self, community: Community, channel_id: str | None) -> str:
        channel = channel_id or community.channel_id
        if not channel:
            raise DeliveryFailed(
                f"workspace {community.name or community.platform_id} has no channel set: "
                "`/cruscible admin channel #channel`"
            )
        return channel

    async def _client(self, team_id: str) -> AsyncWebClient:
        try:
            return await self.client_for(team_id)
        except LookupError as exc:  # uninstalled from that workspace
            raise DeliveryFailed(str(exc)) from None
        except SlackTokenRotationError as exc:  # its expiring token could not be refreshed
            failed = failure(exc.api_error)
            raise DeliveryFailed(
                f"the workspace's token could not be refreshed: {failed.reason}",
                transient=failed.transient,
                retry_after=failed.retry_after,
            ) from None

    async def post(
        self,
        community: Community,
        message: Message,
        *,
        channel_id: str | None = None,
        thread: str | None = None,
        ping: bool = False,
    ) -> str:
        channel = self._home(community, channel_id)
        thread_ts = None
        if thread is not None:
            channel, thread_ts = parse_ref(thread, channel)
        message = redacted(message)
        text = fallback_text(message)
        if ping and community.ping_role:
            blocks = [section(mention(community.ping_role))]
            blocks += to_blocks(message, max_blocks=MAX_BLOCKS - 1)
            text = f"{mention(community.ping_role)} {text}"
        else:
            blocks = to_blocks(message)
        client = await self._client(community.platform_id)
        async with delivering(channel, ref=thread, client=client):
            resp = await client.chat_postMessage(
                channel=channel, text=text, blocks=blocks, thread_ts=thread_ts, unfurl_links=False
            )
        ts: str = resp["ts"]
        await share_files(client, message.files, channel, thread_ts or ts)
        return message_ref(channel, ts)

    async def edit(self, community: Community, ref: str, message: Message) -> None:
        """Replace the message; Slack cannot attach files to an update: they go in its thread."""
        channel, ts = parse_ref(ref, community.channel_id)
        message = redacted(message)
        client = await self._client(community.platform_id)
        async with delivering(channel, ref=ref, editing=True, client=client):
            await client.chat_update(
                channel=channel, ts=ts, text=fallback_text(message), blocks=to_blocks(message)
            )
        await share_files(client, message.files, channel, ts)

    async def dm(self, community: Community | None, user_id: str, message: Message) -> str:
        team = community.platform_id if community is not None else team_of_user(user_id)
        try:
            client = await self._client(team)
        except DeliveryFailed as exc:  # uninstalled from that workspace: no way to reach them
            log.warning("cannot DM %s: %s", user_id, exc.reason)
            if exc.transient:
                raise
            raise DirectMessageClosed(exc.reason) from None
        channel, ts = await direct_message(client, user_id.rpartition(":")[2], message)
        return message_ref(channel, ts)
