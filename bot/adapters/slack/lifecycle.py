"""A workspace's life with the app: retried deliveries handled once, and an uninstall (or a
revoked bot token) that ends the workspace's schedules and boards cleanly.

- Slack retries an event it thinks the app missed (no 2xx within 3 seconds), up to three
  times over about five minutes, with ``X-Slack-Retry-Num`` / ``X-Slack-Retry-Reason``
  (https://api.slack.com/apis/events-api#retries; Socket Mode sends ``retry_attempt`` /
  ``retry_reason``, which slack-bolt turns into the same headers). slack-bolt acknowledges a
  retry like any request and runs its listeners again; :class:`Once` remembers what was
  handled (events by ``event_id``, slash commands by their unique ``trigger_id``) and answers a
  repeat 200 without running anything.
- ``app_uninstalled`` (https://api.slack.com/events/app_uninstalled) and ``tokens_revoked``
  with bot tokens (https://api.slack.com/events/tokens_revoked) delete the workspace's
  installation (slack-bolt's :class:`AsyncTokenRevocationListeners`), cancel its contests and
  leave its community inactive (:meth:`Communities.deactivate`): no further call is made with
  its token.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncApp, AsyncBoltContext
from slack_bolt.listener.async_builtins import AsyncTokenRevocationListeners
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse

from bot.core.coach import Coach

log = logging.getLogger(__name__)

REMEMBER_S = 3600.0  # Slack's retries end about five minutes after the first delivery
REMEMBER_MAX = 10_000
PLATFORM = "slack"


class Once:
    """Keys seen in the last ``remember_s`` seconds (at most ``limit`` of them)."""

    def __init__(self, remember_s: float = REMEMBER_S, limit: int = REMEMBER_MAX) -> None:
        self.remember_s = remember_s
        self.limit = limit
        self._seen: OrderedDict[str, float] = OrderedDict()

    def first(self, key: str) -> bool:
        """True the first time ``key`` is offered (within the memory), False after."""
        now = time.monotonic()
        while self._seen and (
            len(self._seen) >= self.limit or now - next(iter(self._seen.values())) > self.remember_s
        ):
            self._seen.popitem(last=False)
        if key in self._seen:
            return False
        self._seen[key] = now
        return True


def delivery_key(body: dict[str, Any]) -> str | None:
    """What identifies one delivery of Slack's: an event's id, a slash command's trigger."""
    if body.get("type") == "event_callback" and body.get("event_id"):
        return f"event:{body['event_id']}"
    if body.get("command") and body.get("trigger_id"):
        return f"command:{body['trigger_id']}"
    return None


async def deactivate_workspace(coach: Coach, team_id: str) -> None:
    """End the workspace's contests, daily post and boards; leave its community inactive."""
    community = await coach.communities.get(PLATFORM, team_id)
    for contest in await coach.contests.of(community):
        if contest.closed_at is None:
            await coach.contests.cancel(community, contest.id)
    await coach.boards.forget(community.id)
    await coach.communities.deactivate(community.id)


def register_lifecycle(
    bolt: AsyncApp, coach: Coach, on_removed: Callable[[str], Awaitable[None]] | None = None
) -> Once:
    """Attach the retry guard and the uninstall listeners; ``on_removed(team_id)`` is told of
    every workspace that removed the app (after its installation is deleted, before its
    community is deactivated: a board refresh already under way must not use its token)."""
    once = Once()

    async def handle_once(
        req: AsyncBoltRequest, resp: BoltResponse, next: Callable[[], Awaitable[None]]
    ) -> BoltResponse:
        key = delivery_key(req.body)
        if key is None or once.first(key):
            await next()
            return resp
        retry = req.headers.get("x-slack-retry-num", ["?"])[0]
        reason = req.headers.get("x-slack-retry-reason", ["?"])[0]
        log.info("%s delivered again (retry %s: %s); handled once already", key, retry, reason)
        return BoltResponse(status=200, body="")

    async def removed(team_id: str) -> None:
        if on_removed is not None:  # first: no call with its token from now on
            await on_removed(team_id)
        await deactivate_workspace(coach, team_id)
        log.info("Cruscible was removed from Slack workspace %s", team_id)

    async def on_uninstalled(context: AsyncBoltContext) -> None:
        if bolt.installation_store is not None:
            revocation = AsyncTokenRevocationListeners(bolt.installation_store)
            await revocation.handle_app_uninstalled_events(context)
        await removed(context.team_id or "")

    async def on_tokens_revoked(event: dict[str, Any], context: AsyncBoltContext) -> None:
        if bolt.installation_store is not None:
            revocation = AsyncTokenRevocationListeners(bolt.installation_store)
            await revocation.handle_tokens_revoked_events(event, context)
        if event.get("tokens", {}).get("bot"):  # user tokens alone leave the bot working
            await removed(context.team_id or "")

    bolt.middleware(handle_once)
    bolt.event("app_uninstalled")(on_uninstalled)
    bolt.event("tokens_revoked")(on_tokens_revoked)
    return once
