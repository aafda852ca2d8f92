"""`cruscible run --platform slack`: Socket Mode or an HTTP server at /slack/events."""

from __future__ import annotations

import asyncio
import logging
import os

import aiohttp
from aiohttp import web
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.adapters.slack.app import open_slack
from bot.adapters.slack.config import SlackConfig
from bot.app import App

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"


async def check_token(client: AsyncWebClient, name: str = "SLACK_BOT_TOKEN") -> str:
    """auth.test; returns the workspace's team id or raises ValueError with Slack's reason."""
    try:
        resp = await client.auth_test()
    except SlackApiError as exc:
        raise ValueError(f"{name} was refused by Slack: {exc.response.get('error')}") from None
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise ValueError(f"cannot reach the Slack API at {client.base_url}: {exc}") from None
    return str(resp.get("team_id", ""))


async def start_http(bolt: AsyncApp, host: str, port: int) -> web.AppRunner:
    """Serve Slack's requests (and the OAuth pages when enabled) on ``host:port``."""
    runner = web.AppRunner(bolt.web_app(path=EVENTS_PATH, port=port))
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


async def serve(app: App, *, socket_mode: bool = False, port: int = 3000, host: str = "0.0.0.0") -> None:
    """Run the coach on Slack until cancelled; a missing or refused credential is a ValueError."""
    config = SlackConfig.from_env(os.environ, socket_mode=socket_mode)
    async with open_slack(app.coach, config, app.settings.data_dir) as bot:
        if not config.oauth:
            team = await check_token(bot.bolt.client)
            await app.coach.communities.get("slack", team)
        if socket_mode:
            handler = AsyncSocketModeHandler(bot.bolt, config.app_token)
            try:
                await handler.connect_async()
            except SlackApiError as exc:
                error = exc.response.get("error")
                raise ValueError(f"SLACK_APP_TOKEN was refused by Slack: {error}") from None
            log.warning("Cruscible is connected to Slack (Socket Mode)")
            try:
                await asyncio.Event().wait()
            finally:
                await handler.close_async()
        else:
            runner = await start_http(bot.bolt, host, port)
            log.warning("Cruscible serves Slack at http://%s:%d%s", host, port, EVENTS_PATH)
            try:
                await asyncio.Event().wait()
            finally:
                await runner.cleanup()
