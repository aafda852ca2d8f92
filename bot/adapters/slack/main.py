"""`cruscible run --platform slack`: Socket Mode or an HTTP server at /slack/events."""

from __future__ import annotations

import asyncio
import os
import sys

import aiohttp
from aiohttp import web
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.adapters.slack.app import open_slack
from bot.adapters.slack.channels import PLATFORM, SlackChannels
from bot.adapters.slack.config import SlackConfig
from bot.app import App, operations

EVENTS_PATH = "/slack/events"


async def check_token(client: AsyncWebClient) -> str:
    """auth.test of the bot token; returns the workspace's name, or raises ValueError."""
    try:
        resp = await client.auth_test()
    except SlackApiError as exc:
        raise ValueError(
            f"SLACK_BOT_TOKEN was refused by Slack: {exc.response.get('error')}"
        ) from None
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise ValueError(f"cannot reach the Slack API at {client.base_url}: {exc}") from None
    return str(resp.get("team") or resp.get("team_id") or "?")


async def start_http(bolt: AsyncApp, host: str, port: int) -> web.AppRunner:
    """Serve Slack's requests (and the OAuth pages when enabled) on ``host:port``."""
    runner = web.AppRunner(bolt.web_app(path=EVENTS_PATH, port=port))
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


async def serve(
    app: App, *, socket_mode: bool = False, port: int = 3000, host: str = "0.0.0.0"
) -> None:
    """Run the coach on Slack until cancelled; a missing or refused credential is a ValueError."""
    config = SlackConfig.from_env(os.environ, socket_mode=socket_mode)
    async with open_slack(app.coach, config, app.settings.data_dir) as bot:
        where = "every workspace that installs it"
        if not config.oauth:
            where = f"workspace {await check_token(bot.bolt.client)}"
        app.coach.channels.register(PLATFORM, SlackChannels(bot.client_for))
        try:
            async with operations(app):  # schedules and the grading queue, posting via the API
                if socket_mode:
                    await run_socket_mode(bot.bolt, config, where)
                else:
                    await run_http(bot.bolt, host, port, where)
        finally:
            app.coach.channels.unregister(PLATFORM)


async def run_socket_mode(bolt: AsyncApp, config: SlackConfig, where: str) -> None:
    handler = AsyncSocketModeHandler(bolt, config.app_token)
    try:
        await handler.connect_async()
    except SlackApiError as exc:
        error = exc.response.get("error")
        raise ValueError(f"SLACK_APP_TOKEN was refused by Slack: {error}") from None
    print(f"Cruscible is on Slack in {where} (Socket Mode)", file=sys.stderr)
    try:
        await asyncio.Event().wait()
    finally:
        await handler.close_async()


async def run_http(bolt: AsyncApp, host: str, port: int, where: str) -> None:
    runner = await start_http(bolt, host, port)
    print(f"Cruscible serves {where} at http://{host}:{port}{EVENTS_PATH}", file=sys.stderr)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
