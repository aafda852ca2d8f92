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

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.adapters.slack.blocks import context, fallback_text, to_blocks
from bot.adapters.slack.failures import delivering
from bot.core.message import Field, Message
from bot.core.outbox import Actor, DeliveryFailed, InteractionExpired
from bot.logs import SECRETS

log = logging.getLogger(__name__)

EDIT_EVERY_S = 2.0  # chat.update is rate-limited (tier 3, ~50/min per workspace)
EPHEMERAL = "ephemeral:"
# A response_url takes 5 messages within 30 minutes of the interaction:
# https://api.slack.com/interactivity/handling#message_responses. We stop a little early so
# that a message in flight never meets the deadline.
RESPONSE_URL_USES = 5
RESPONSE_URL_TTL_S = 30 * 60.0
RESPONSE_URL_MARGIN_S = 30.0


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

    Failures are the coach's neutral ones (:mod:`bot.adapters.slack.failures`): a refused post
    raises :class:`DeliveryFailed` (:class:`MessageGone` when its thread was deleted), a
    refused DM :class:`DirectMessageClosed`; progress edits are best-effort (a refusal is
    logged), a final edit raises. ``reply`` uses the ``response_url`` at most 5 times within
    30 minutes of ``received_at`` (``time.monotonic()``, default now), then
    ``chat.postEphemeral`` in ``channel``; with neither left it raises
    :class:`InteractionExpired` (the caller continues by DM or in the channel).
    """

    def __init__(
        self,
        client: AsyncWebClient,
        *,
        user: str,
        channel: str | None = None,
        post_channel: str | None = None,
        response_url: str | None = None,
        received_at: float | None = None,
    ) -> None:
        self.client = client
        self.user = user
        self.channel = channel
        self.post_channel = post_channel or channel
        self.response_url = response_url
        self.received_at = time.monotonic() if received_at is None else received_at
        self.response_uses = 0
        self.replied = False
        self._ids = itertools.count(1)
        self._locks: dict[str, asyncio.Lock] = {}
        self._latest: dict[str, int] = {}
        self._updated_at: dict[str, float] = {}

    # -- the Outbox protocol -----------------------------------------------------------------
    async def post(self, msg: Message, *, thread: str | None = None) -> str:
        """Post in ``post_channel``, or under ``thread`` (a ts there, or a ``"<channel>/<ts>"``
        ref, as a submission records the daily post); returns the new message's
        ``"<channel>/<ts>"`` ref (which ``SlackChannels`` accepts too, after a restart)."""
        if self.post_channel is None:
            raise DeliveryFailed("no channel to post in: `/cruscible admin channel #channel`")
        channel = self.post_channel
        if thread is not None:
            channel, thread = parse_ref(thread, channel)
        msg = redacted(msg)
        async with delivering(channel, ref=thread and f"{channel}/{thread}", client=self.client):
            resp = await self.client.chat_postMessage(
                channel=channel,
                text=fallback_text(msg),
                blocks=to_blocks(msg),
                thread_ts=thread,
                unfurl_links=False,
            )
        ts: str = resp["ts"]
        await share_files(self.client, msg.files, channel, thread or ts)
        return message_ref(channel, ts)

    async def reply(self, msg: Message) -> str:
        self.replied = True
        if msg.progress is not None:
            try:
                ref = await self._direct(self.user, msg)
            except DeliveryFailed:  # DMs closed, or Slack busy: progress is only a nicety
                return await self._ephemeral(msg)
            note = Message(title=msg.title, body="Progress is in your direct messages with me.")
            try:
                await self._ephemeral(note)
            except DeliveryFailed as exc:
                log.info("no note of the progress DM: %s", exc.reason)
            return ref
        return await self._ephemeral(msg)

    async def edit(self, ref: str, msg: Message) -> None:
        """Update ``ref``; a progress update that fails is only logged, a final one raises."""
        final = msg.progress is None or msg.progress >= 1.0
        try:
            await self._edit(ref, msg, final)
        except DeliveryFailed as exc:
            if final:
                raise
            log.info("progress update of %s skipped: %s", ref, exc.reason)

    async def _edit(self, ref: str, msg: Message, final: bool) -> None:
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
            channel = channel or self.post_channel
            async with delivering(channel, ref=ref, editing=True, client=self.client):
                await self.client.chat_update(
                    channel=channel, ts=ts, text=fallback_text(msg), blocks=to_blocks(msg)
                )

    async def dm(self, actor: Actor, msg: Message) -> str:
        ref = await self._direct(slack_user(actor), msg)
        if not self.replied and slack_user(actor) == self.user:
            note = Message(title="Check your direct messages", body=f"I sent you *{msg.title}*.")
            try:
                await self._ephemeral(note)
            except DeliveryFailed as exc:  # a courtesy: the DM itself went out
                log.info("no note of the DM: %s", exc.reason)
        return ref

    # -- the ways to Slack -------------------------------------------------------------------
    async def _direct(self, user: str, msg: Message) -> str:
        """A DM (``channel:ts``); :class:`DirectMessageClosed` when Slack refuses it for good."""
        channel, ts = await direct_message(self.client, user, msg)
        return f"{channel}:{ts}"

    async def _ephemeral(self, msg: Message) -> str:
        """Only the learner sees it: the response_url while it lasts, else chat.postEphemeral;
        neither left → :class:`InteractionExpired` (or, for an interaction that never had a
        response_url nor a channel, such as a form opened from App Home, a DM)."""
        blocks = to_blocks(msg)
        if msg.files:
            names = ", ".join(f.name for f in msg.files)
            blocks.append(context(f"Files cannot be attached to this message: {names}"))
        payload: dict[str, Any] = {"text": fallback_text(msg), "blocks": blocks}
        ref = f"{EPHEMERAL}{next(self._ids)}"
        had_response_url = self.response_url is not None
        if self._response_url_usable() and await self._respond(payload):
            return ref
        refused = (
            "the interaction's response_url is used up (5 messages in 30 minutes)"
            if had_response_url
            else "this interaction has no response_url"
        )
        if self.channel:
            try:
                async with delivering(self.channel, client=self.client):
                    await self.client.chat_postEphemeral(
                        channel=self.channel, user=self.user, **payload
                    )
                return ref
            except DeliveryFailed as exc:
                refused = f"{refused}, and {exc.reason}"
        if not had_response_url and not self.channel:
            return await self._direct(self.user, msg)
        raise InteractionExpired(refused)

    def _response_url_usable(self) -> bool:
        """Uses left, and time left: we stop before Slack's limit rather than meet it."""
        age = time.monotonic() - self.received_at
        return (
            self.response_url is not None
            and self.response_uses < RESPONSE_URL_USES
            and age < RESPONSE_URL_TTL_S - RESPONSE_URL_MARGIN_S
        )

    async def _respond(self, payload: dict[str, Any]) -> bool:
        assert self.response_url is not None
        self.response_uses += 1
        webhook = AsyncWebhookClient(self.response_url)
        try:
            resp = await webhook.send_dict(
                {**payload, "response_type": "ephemeral", "replace_original": False}
            )
        except (aiohttp.ClientError, OSError) as exc:
            log.warning("response_url unreachable: %s", type(exc).__name__)
            return False
        if resp.status_code != 200:  # 404 used_url / expired_url, or a refused payload
            log.warning("response_url refused: %s %s", resp.status_code, resp.body)
            self.response_url = None
        return resp.status_code == 200


async def direct_message(client: AsyncWebClient, user: str, msg: Message) -> tuple[str, str]:
    """DM ``msg`` (unmasked: it is the learner's own) to ``user``; ``(channel, ts)``.

    A permanent refusal of Slack's means DMs are closed to us: :class:`DirectMessageClosed`
    (with Slack's reason); a 429 or 5xx is a transient :class:`DeliveryFailed`.
    """
    async with delivering(user, dm=True):
        opened = await client.conversations_open(users=user)
        channel: str = opened["channel"]["id"]
        resp = await client.chat_postMessage(
            channel=channel, text=fallback_text(msg), blocks=to_blocks(msg), unfurl_links=False
        )
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
