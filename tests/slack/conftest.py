"""The real bolt app in HTTP mode on 127.0.0.1, its Web API client pointed at a fake Slack."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import pytest

from bot.adapters.slack.app import SlackBot, open_slack
from bot.adapters.slack.config import SlackConfig
from bot.adapters.slack.main import EVENTS_PATH, start_http
from bot.app import App
from tests.slack.fakeslack import BOT_TOKEN, OAUTH_CODE, SIGNING_SECRET, FakeSlack, SlackSender

DRAIN_S = 60.0


async def until(check: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    """Wait for state the app changes in the background (an event's listener) to show."""
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110
            await asyncio.sleep(0.05)


@dataclass
class Workspace:
    fake: FakeSlack
    bot: SlackBot
    sender: SlackSender
    url: str

    async def settle(self) -> None:
        """Wait until the lazy listeners' work has ended."""
        async with asyncio.timeout(DRAIN_S):
            await self.bot.inflight.drain()


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    slack = FakeSlack(admins={"UADMIN"})
    await slack.start()
    yield slack
    await slack.close()


async def serve_bot(app: App, fake: FakeSlack, config: SlackConfig) -> AsyncIterator[Workspace]:
    async with open_slack(app.coach, config, app.settings.data_dir) as bot:
        runner = await start_http(bot.bolt, "127.0.0.1", 0)
        port = runner.addresses[0][1]
        url = f"http://127.0.0.1:{port}{EVENTS_PATH}"
        try:
            workspace = Workspace(fake, bot, SlackSender(url, fake), url)
            yield workspace
            await workspace.settle()
        finally:
            await runner.cleanup()


@pytest.fixture
async def slack(app: App, fake: FakeSlack) -> AsyncIterator[Workspace]:
    config = SlackConfig(signing_secret=SIGNING_SECRET, bot_token=BOT_TOKEN, api_url=fake.api_url)
    async for workspace in serve_bot(app, fake, config):
        yield workspace


OAUTH_CONFIG = {"client_id": "111.222", "client_secret": "client-secret"}


@pytest.fixture
async def oauth_slack(app: App, fake: FakeSlack) -> AsyncIterator[Workspace]:
    """The bolt app installed through OAuth into many workspaces (installations in SQL)."""
    config = SlackConfig(signing_secret=SIGNING_SECRET, api_url=fake.api_url, **OAUTH_CONFIG)
    async for workspace in serve_bot(app, fake, config):
        yield workspace


async def install(workspace: Workspace) -> str:
    """Install the app into the fake's OAuth workspace as a browser would; the install page."""
    base = workspace.url.removesuffix("/slack/events")
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/slack/install", allow_redirects=False) as page:
            html, cookie = await page.text(), page.headers["Set-Cookie"].split(";")[0]
        state = re.search(r"state=([\w-]+)", html)
        assert page.status == 200 and state is not None
        callback = f"{base}/slack/oauth_redirect?code={OAUTH_CODE}&state={state.group(1)}"
        async with http.get(callback, headers={"Cookie": cookie}) as done:
            assert done.status == 200, await done.text()
    return html
