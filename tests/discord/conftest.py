"""The real discord.py client against the local fake Discord, with the real app."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from discord.gateway import DiscordWebSocket
from discord.http import Route

from bot.adapters.discord.client import CruscibleClient
from bot.app import App
from tests.discord.fake import API, TOKEN, FakeDiscord


@pytest.fixture(scope="session")
async def fake() -> AsyncIterator[FakeDiscord]:
    server = FakeDiscord()
    await server.start()
    saved = Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY
    Route.BASE = server.url + API
    DiscordWebSocket.DEFAULT_GATEWAY = server.gateway_url
    yield server
    Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = saved
    await server.stop()


@pytest.fixture(scope="session")
async def bot(fake: FakeDiscord, app: App) -> AsyncIterator[CruscibleClient]:
    """A connected client (the first on the fake: interactions go to it)."""
    client = CruscibleClient(app, guild_ready_timeout=0.1)
    await client.login(TOKEN)
    connection = asyncio.create_task(client.connect())
    await asyncio.wait_for(client.wait_until_ready(), 10)
    yield client
    await client.close()
    await connection
