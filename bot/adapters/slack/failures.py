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

from bot.core.channels import MessageGone
from bot.core.outbox import DeliveryFailed, DirectMessageClosed

log = logging.getLogger(__name__)

GONE = {"message_not_found", "thread_not_found", "cant_update_message"}
REVOKED = {"invalid_auth", "not_authed", "token_revoked", "token_expired", "account_inactive"}
TRANSIENT = {"ratelimited", "internal_error", "fatal_error", "service_unavailable"}
TRANSIENT |= {"request_timeout"}
REASONS = {
    "channel_not_found": "channel {where} was not found (deleted, or private without Cruscible):"
    " choose another with `/cruscible admin channel #channel`, or `/invite @Cruscible` there",
    "not_in_channel": "Cruscible is not in {where}: `/invite @Cruscible` there",
    "is_archived": "{where} is archived: unarchive it, or choose another channel with "
    "`/cruscible admin channel #channel`",
    "restricted_action": "this workspace does not let Cruscible post in {where}: "
    "an admin can allow it, or choose another channel",
    "msg_too_long": "the message was too long for Slack",
    "invalid_blocks": "Slack refused the message's layout (invalid_blocks)",
    "missing_scope": "Cruscible lacks a permission it needs: reinstall the app from its manifest",
    "cannot_dm_user": "{where} does not accept direct messages from apps",
    "user_not_found": "{where} is not a member of this workspace",
}
REVOKED_REASON = "Cruscible's access to this workspace was revoked: reinstall the app"


def where_label(channel: str | None) -> str:
    """A channel as Slack shows it to an admin (``<#C123>`` renders as #its-name)."""
    if not channel:
        return "the channel"
    return f"<@{channel}>" if channel.startswith("U") else f"<#{channel}>"


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
) -> DeliveryFailed:
    """The neutral failure for ``exc`` raised posting to ``channel`` (or editing ``ref``).

    ``dm``: the call was a direct message, so a permanent refusal is
    :class:`DirectMessageClosed`. ``editing``: a message in a channel that is gone is gone too.
    """
    where = where_label(channel)
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
) -> AsyncIterator[None]:
    """Turn a Slack refusal or a network failure inside into the neutral failure
    (arguments as for :func:`failure`)."""
    try:
        yield
    except NETWORK as exc:
        failed = failure(exc, channel=channel, ref=ref, dm=dm, editing=editing)
        log.warning("Slack delivery to %s failed: %s", channel or ref, failed.reason)
        raise failed from None
