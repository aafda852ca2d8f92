"""The real bolt app in HTTP mode on 127.0.0.1, its Web API client pointed at a fake Slack."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from bot.adapters.slack.app import SlackBot, open_slack
from bot.adapters.slack.config import SlackConfig
from bot.adapters.slack.main import EVENTS_PATH, start_http
from bot.app import App
from tests.slack.fakeslack import BOT_TOKEN, SIGNING_SECRET, FakeSlack, SlackSender

DRAIN_S = 60.0


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
