"""Bolt listeners: each acknowledges at once and does the slow work in a lazy listener."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.adapters.slack import commands, modal
from bot.adapters.slack.home import home_view
from bot.adapters.slack.outbox import SlackOutbox, slack_actor
from bot.core.coach import Coach
from bot.core.commands import press

BUTTONS = re.compile(r"^(start|tradeoffs):")


class Inflight:
    """The lazy listeners running now: held (asyncio keeps only weak references), awaited, cancelled."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()

    @asynccontextmanager
    async def track(self) -> AsyncIterator[None]:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            yield
        finally:
            self.tasks.discard(task)

    async def drain(self) -> None:
        """Wait until no work runs (bound it with ``asyncio.timeout``)."""
        while self.tasks:
            await asyncio.wait(set(self.tasks))

    def cancel(self) -> None:
        for task in self.tasks:
            task.cancel()


def team_of(context: AsyncBoltContext) -> str:
    return context.team_id or context.enterprise_id or ""


def register(bolt: AsyncApp, coach: Coach, inflight: Inflight) -> None:
    """Attach every listener of the coach to ``bolt``."""

    async def ack_now(ack: AsyncAck) -> None:
        await ack()

    async def on_command(
        command: dict[str, Any], client: AsyncWebClient, context: AsyncBoltContext
    ) -> None:
        async with inflight.track():
            team = team_of(context)
            community = await coach.communities.get("slack", team, command.get("team_domain", ""))
            channel = command["channel_id"]
            out = SlackOutbox(
                client,
                user=command["user_id"],
                channel=channel,
                post_channel=community.channel_id or channel,
                response_url=command.get("response_url"),
            )
            actor = slack_actor(team, command["user_id"], command.get("user_name", ""))
            inv = commands.Invocation(
                coach, client, community, actor, out, channel, command["trigger_id"]
            )
            await commands.run(inv, command.get("text", ""))

    async def on_button(
        body: dict[str, Any], client: AsyncWebClient, context: AsyncBoltContext
    ) -> None:
        async with inflight.track():
            user = body["user"]
            team = team_of(context)
            community = await coach.communities.get("slack", team)
            channel = (body.get("channel") or {}).get("id")
            out = SlackOutbox(
                client,
                user=user["id"],
                channel=channel,
                post_channel=community.channel_id or channel,
                response_url=body.get("response_url"),
            )
            actor = slack_actor(team, user["id"], user.get("username") or user.get("name", ""))
            action = body["actions"][0]["action_id"]
            async with commands.apologising(out, f"button {action}"):
                await press(coach, actor, action, out, community=community)

    async def check_form(ack: AsyncAck, view: dict[str, Any]) -> None:
        errors = modal.errors(modal.read_submission(view))
        if errors:
            await ack(response_action="errors", errors=errors)
        else:
            await ack()

    async def on_form(
        body: dict[str, Any],
        view: dict[str, Any],
        client: AsyncWebClient,
        context: AsyncBoltContext,
    ) -> None:
        form = modal.read_submission(view)
        if modal.errors(form) or form.challenge is None:
            return  # refused in check_form
        async with inflight.track():
            user = body["user"]
            team = team_of(context)
            community = await coach.communities.get("slack", team)
            out = SlackOutbox(
                client,
                user=user["id"],
                channel=form.channel,
                post_channel=community.channel_id or form.channel,
            )
            actor = slack_actor(team, user["id"], user.get("username") or user.get("name", ""))
            async with commands.apologising(out, "the submission form"):
                await commands.submit(coach, community, actor, form.challenge, form.url, out)

    async def on_dm_file(
        event: dict[str, Any], client: AsyncWebClient, context: AsyncBoltContext
    ) -> None:
        """Code shared in the app's DM (``message.im`` with files) is submitted."""
        shared = event.get("files") or []
        if event.get("channel_type") != "im" or event.get("bot_id") or not shared:
            return
        if event.get("subtype") not in (None, "file_share") or not event.get("user"):
            return
        async with inflight.track():
            team = team_of(context)
            community = await coach.communities.get("slack", team)
            user, dm = event["user"], event["channel"]
            out = SlackOutbox(
                client, user=user, channel=dm, post_channel=community.channel_id or dm
            )
            actor = slack_actor(team, user, await user_name(client, user))
            async with commands.apologising(out, "a shared file"):
                await commands.submit_file(
                    coach, client, community, actor, event.get("text", ""), shared, out
                )

    async def on_home(
        event: dict[str, Any], client: AsyncWebClient, context: AsyncBoltContext
    ) -> None:
        if event.get("tab", "home") != "home":
            return
        actor = slack_actor(team_of(context), event["user"], "")
        await client.views_publish(user_id=event["user"], view=await home_view(coach, actor))

    bolt.command(commands.SLASH)(ack=ack_now, lazy=[on_command])
    bolt.action(BUTTONS)(ack=ack_now, lazy=[on_button])
    bolt.view(modal.CALLBACK_ID)(ack=check_form, lazy=[on_form])
    bolt.event("app_home_opened")(on_home)
    bolt.event("message")(ack=ack_now, lazy=[on_dm_file])


async def user_name(client: AsyncWebClient, user: str) -> str:
    """The learner's Slack name (events carry only the id); "" when users.info fails."""
    try:
        info = (await client.users_info(user=user))["user"]
    except SlackApiError:
        return ""
    return str(info.get("name") or "")
