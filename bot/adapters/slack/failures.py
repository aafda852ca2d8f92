"""Slack's refusals as the coach's neutral delivery failures, with a reason an admin can act on.

Errors are those of https://api.slack.com/methods/chat.postMessage#errors (and chat.update,
conversations.open, the same names): a permanent refusal becomes :class:`DeliveryFailed`
(or :class:`MessageGone` when the message to edit or thread under was deleted), so the caller
moves on to its next route; a 429 that outlasted slack-sdk's ``RateLimitErrorRetryHandler``,
a 5xx or a network failure is ``transient`` (with Slack's ``Retry-After`` when it sent one,
https://api.slack.com/apis/rate-limits), so the caller may try again later.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.core.channels import MessageGone
from bot.core.outbox import DeliveryFailed, DirectMessageClosed

log = logging.getLogger(__name__)

GONE = {"message_not_found", "thread_not_found", "cant_update_message"}
REVOKED = {"invalid_auth", "not_authed", "token_revoked", "token_expired", "account_inactive"}
TRANSIENT = {"ratelimited", "internal_error", "fatal_error", "service_unavailable"}
TRANSIENT |= {"request_timeout"}
REASONS = {
    "channel_not_found": "{where} was not found (deleted, or private without Cruscible):"
    " choose another with `/cruscible admin channel #channel`, or `/invite @Cruscible` there",
    "not_in_channel": "Cruscible is not in {where}: `/invite @Cruscible` there",
    "is_archived": "{where} is archived: unarchive it, or choose another channel with "
    "`/cruscible admin channel #channel`",
    "restricted_action": "this workspace does not let Cruscible post in {where}: "
    "an admin can allow it, or choose another channel",
    "msg_too_long": "the message was too long for Slack",
    "msg_blocks_too_long": "the message was too long for Slack",
    "invalid_blocks": "Slack refused the message's layout (invalid_blocks)",
    "missing_scope": "Cruscible lacks a permission it needs: reinstall the app from its manifest",
    "cannot_dm_user": "direct messages from Cruscible are closed for this member",
    "user_not_found": "this member is no longer in the workspace",
}
REVOKED_REASON = "Cruscible's access to this workspace was revoked: reinstall the app"
NAMED = {"not_in_channel", "is_archived", "restricted_action"}  # the channel still exists
NAME_LOOKUP_S = 5.0


def where_label(channel: str | None, name: str | None = None) -> str:
    """A channel as an admin reads it: ``#its-name`` when known, else ``channel C123``. (Reasons
    are shown as text, where Slack's ``<#C123>`` would not render.)"""
    if name:
        return f"#{name}"
    return f"channel {channel}" if channel else "the channel"


async def channel_name(client: AsyncWebClient, channel: str) -> str | None:
    """The channel's name (conversations.info), or None when Slack will not say."""
    try:
        async with asyncio.timeout(NAME_LOOKUP_S):
            info = await client.conversations_info(channel=channel)
        return str(info["channel"]["name"]) or None
    except Exception:  # noqa: BLE001 — only a nicer label is lost
        return None


def _status(exc: SlackApiError) -> int:
    response: Any = exc.response
    return int(getattr(response, "status_code", None) or getattr(response, "status", 0) or 0)


def _retry_after(exc: SlackApiError) -> float | None:
    headers: Any = getattr(exc.response, "headers", None) or {}
    for name, value in dict(headers).items():
        if name.lower() == "retry-after":
            value = value[0] if isinstance(value, list) else value
            try:
                return float(value)
            except ValueError:
                return None
    return None


def error_code(exc: SlackApiError) -> str:
    """Slack's ``error`` (``"http_<status>"`` when the answer was not Slack's JSON)."""
    try:
        error = exc.response.get("error")
    except AttributeError:  # an aiohttp response: the body was not JSON
        error = None
    return str(error or f"http_{_status(exc)}")


def failure(
    exc: BaseException,
    *,
    channel: str | None = None,
    ref: str | None = None,
    dm: bool = False,
    editing: bool = False,
    name: str | None = None,
) -> DeliveryFailed:
    """The neutral failure for ``exc`` raised posting to ``channel`` (or editing ``ref``).

    ``dm``: the call was a direct message, so a permanent refusal is
    :class:`DirectMessageClosed`. ``editing``: a message in a channel that is gone is gone too.
    ``name``: the channel's name, for the reason.
    """
    where = where_label(channel, name)
    if not isinstance(exc, SlackApiError):  # the network, a timeout
        return DeliveryFailed(f"Slack could not be reached ({type(exc).__name__})", transient=True)
    code, status = error_code(exc), _status(exc)
    if status == 429 or code in TRANSIENT or status >= 500:
        return DeliveryFailed(
            f"Slack is busy ({code}); try again later",
            transient=True,
            retry_after=_retry_after(exc),
        )
    if code in GONE or (editing and code == "channel_not_found"):
        return MessageGone(f"the message {ref} was deleted" if ref else "the message was deleted")
    if code in REVOKED:
        return DeliveryFailed(REVOKED_REASON)
    reason = REASONS.get(code, "Slack refused it ({code})").format(where=where, code=code)
    return DirectMessageClosed(reason) if dm else DeliveryFailed(reason)


NETWORK = (SlackApiError, aiohttp.ClientError, asyncio.TimeoutError, OSError)


@asynccontextmanager
async def delivering(
    channel: str | None = None,
    *,
    ref: str | None = None,
    dm: bool = False,
    editing: bool = False,
    client: AsyncWebClient | None = None,
) -> AsyncIterator[None]:
    """Turn a Slack refusal or a network failure inside into the neutral failure (arguments
    as for :func:`failure`); with ``client``, a channel that still exists is named in it."""
    try:
        yield
    except NETWORK as exc:
        name = None
        code = error_code(exc) if isinstance(exc, SlackApiError) else ""
        if client is not None and channel and not dm and code in NAMED:
            name = await channel_name(client, channel)
        failed = failure(exc, channel=channel, ref=ref, dm=dm, editing=editing, name=name)
        log.warning("Slack delivery to %s failed: %s", channel or ref, failed.reason)
        raise failed from None
