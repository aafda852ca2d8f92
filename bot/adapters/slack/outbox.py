"""The coach's Outbox on Slack: channel posts, ephemeral replies, DMs, throttled chat.update."""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.adapters.slack.blocks import context, fallback_text, to_blocks
from bot.core.message import Field, Message
from bot.core.outbox import Actor, DirectMessageClosed
from bot.logs import SECRETS

log = logging.getLogger(__name__)

EDIT_EVERY_S = 2.0  # chat.update is rate-limited (tier 3, ~50/min per workspace)
EPHEMERAL = "ephemeral:"


def slack_actor(team_id: str, user_id: str, name: str) -> Actor:
    """A learner is a user of a workspace: ids are qualified by the team."""
    return Actor("slack", f"{team_id}:{user_id}", name or user_id)


def slack_user(actor: Actor) -> str:
    return actor.id.rpartition(":")[2]


def message_ref(channel: str, ts: str) -> str:
    """A channel, thread or DM message that outlives the process: ``"<channel>/<ts>"``."""
    return f"{channel}/{ts}"


def parse_ref(ref: str, channel: str | None = None) -> tuple[str, str]:
    """``(channel, ts)`` of a ref; a bare ``ts`` means a message in ``channel``."""
    head, _, ts = ref.rpartition("/")
    if head:
        return head, ts
    if channel is None:
        raise ValueError(f"message ref {ref!r} names no channel")
    return channel, ts


def redacted(msg: Message) -> Message:
    """``msg`` with every known secret masked: what may go into a channel."""
    return replace(
        msg,
        title=SECRETS.redact(msg.title),
        body=SECRETS.redact(msg.body),
        fields=[
            Field(SECRETS.redact(f.name), SECRETS.redact(f.value), f.inline) for f in msg.fields
        ],
        footer=SECRETS.redact(msg.footer),
    )


class SlackOutbox:
    """One learner's conversation with the coach, started by a command, button or form.

    ``post`` goes to ``post_channel`` (threads under the day's post), ``reply`` is ephemeral
    (through ``response_url`` when there is one), ``dm`` opens a DM. Ephemeral messages cannot
    be updated, so a reply that carries progress is a DM message that ``edit`` updates.
    """

    def __init__(
        self,
        client: AsyncWebClient,
        *,
        user: str,
        channel: str | None = None,
        post_channel: str | None = None,
        response_url: str | None = None,
    ) -> None:
        self.client = client
        self.user = user
        self.channel = channel
        self.post_channel = post_channel or channel
        self.response_url = response_url
        self.replied = False
        self._ids = itertools.count(1)
        self._locks: dict[str, asyncio.Lock] = {}
        self._latest: dict[str, int] = {}
        self._updated_at: dict[str, float] = {}

    # -- the Outbox protocol -----------------------------------------------------------------
    async def post(self, msg: Message, *, thread: str | None = None) -> str:
        """Post in ``post_channel``, or under ``thread`` (a ts there, or a ``"<channel>/<ts>"``
        ref, as a submission records the daily post); returns the new message's ts."""
        if self.post_channel is None:
            raise RuntimeError("no channel to post in")
        channel = self.post_channel
        if thread is not None:
            channel, thread = parse_ref(thread, channel)
        msg = redacted(msg)
        resp = await self.client.chat_postMessage(
            channel=channel,
            text=fallback_text(msg),
            blocks=to_blocks(msg),
            thread_ts=thread,
            unfurl_links=False,
        )
        ts: str = resp["ts"]
        await share_files(self.client, msg.files, channel, thread or ts)
        return ts

    async def reply(self, msg: Message) -> str:
        self.replied = True
        if msg.progress is not None:
            try:
                ref = await self._direct(self.user, msg)
            except DirectMessageClosed:
                return await self._ephemeral(msg)
            await self._ephemeral(
                Message(title=msg.title, body="Progress is in your direct messages with me.")
            )
            return ref
        return await self._ephemeral(msg)

    async def edit(self, ref: str, msg: Message) -> None:
        final = msg.progress is None or msg.progress >= 1.0
        if ref.startswith(EPHEMERAL):
            if final:  # an ephemeral message cannot be updated: say it again
                await self._ephemeral(msg)
            return
        seq = self._latest[ref] = self._latest.get(ref, 0) + 1
        async with self._locks.setdefault(ref, asyncio.Lock()):
            if seq != self._latest[ref]:
                return  # a newer edit is waiting; it wins
            now = time.monotonic()
            if not final and now - self._updated_at.get(ref, -math.inf) < EDIT_EVERY_S:
                return
            self._updated_at[ref] = now
            channel, _, ts = ref.rpartition(":")
            await self.client.chat_update(
                channel=channel or self.post_channel,
                ts=ts,
                text=fallback_text(msg),
                blocks=to_blocks(msg),
            )

    async def dm(self, actor: Actor, msg: Message) -> str:
        ref = await self._direct(slack_user(actor), msg)
        if not self.replied and slack_user(actor) == self.user:
            await self._ephemeral(
                Message(title="Check your direct messages", body=f"I sent you *{msg.title}*.")
            )
        return ref

    # -- the ways to Slack -------------------------------------------------------------------
    async def _direct(self, user: str, msg: Message) -> str:
        """A DM (``channel:ts``); any refusal means DMs are closed to us."""
        channel, ts = await direct_message(self.client, user, msg)
        return f"{channel}:{ts}"

    async def _ephemeral(self, msg: Message) -> str:
        """Only the learner sees it: the response_url, else chat.postEphemeral, else a DM."""
        blocks = to_blocks(msg)
        if msg.files:
            names = ", ".join(f.name for f in msg.files)
            blocks.append(context(f"Files cannot be attached to this message: {names}"))
        payload: dict[str, Any] = {"text": fallback_text(msg), "blocks": blocks}
        ref = f"{EPHEMERAL}{next(self._ids)}"
        if self.response_url and await self._respond(payload):
            return ref
        if self.channel:
            try:
                await self.client.chat_postEphemeral(
                    channel=self.channel, user=self.user, **payload
                )
                return ref
            except SlackApiError as exc:
                log.warning("ephemeral refused in %s: %s", self.channel, exc.response.get("error"))
        return await self._direct(self.user, msg)

    async def _respond(self, payload: dict[str, Any]) -> bool:
        assert self.response_url is not None
        webhook = AsyncWebhookClient(self.response_url)
        resp = await webhook.send_dict(
            {**payload, "response_type": "ephemeral", "replace_original": False}
        )
        if resp.status_code != 200:  # expired, or used more than 5 times
            log.warning("response_url refused: %s %s", resp.status_code, resp.body)
            self.response_url = None
        return resp.status_code == 200


async def direct_message(client: AsyncWebClient, user: str, msg: Message) -> tuple[str, str]:
    """DM ``msg`` (unmasked: it is the learner's own) to ``user``; ``(channel, ts)``.

    Any refusal of Slack's means DMs are closed to us: :class:`DirectMessageClosed`.
    """
    try:
        opened = await client.conversations_open(users=user)
        channel: str = opened["channel"]["id"]
        resp = await client.chat_postMessage(
            channel=channel, text=fallback_text(msg), blocks=to_blocks(msg), unfurl_links=False
        )
    except SlackApiError as exc:
        log.warning("cannot DM %s: %s", user, exc.response.get("error"))
        raise DirectMessageClosed(user) from None
    await share_files(client, msg.files, channel, None)
    return channel, resp["ts"]


async def share_files(
    client: AsyncWebClient, files: list[Path], channel: str, thread: str | None
) -> None:
    """Share ``files`` (the plot, the report) in ``channel``; a refusal costs only the files."""
    uploads = [{"file": str(f), "filename": f.name, "title": f.name} for f in files]
    if not uploads:
        return
    try:
        await client.files_upload_v2(file_uploads=uploads, channel=channel, thread_ts=thread)
    except SlackApiError as exc:
        log.warning("files not shared in %s: %s", channel, exc.response.get("error"))
