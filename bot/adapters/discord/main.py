"""``cruscible run --platform discord``: the bot on Discord's gateway, token from DISCORD_TOKEN."""

from __future__ import annotations

import os

import aiohttp
import discord

from bot.adapters.discord.channels import DiscordChannels
from bot.adapters.discord.client import CruscibleClient
from bot.adapters.discord.turn import PLATFORM
from bot.app import App, operations


async def serve(app: App, *, socket_mode: bool = False, port: int = 0) -> None:
    """Run until stopped; ``socket_mode`` and ``port`` are Slack's (Discord has a gateway)."""
    token = os.environ.get("DISCORD_TOKEN", "").strip()
    if not token:
        raise ValueError("DISCORD_TOKEN is not set (the bot token from the developer portal)")
    async with CruscibleClient(app) as client:
        try:
            await client.login(token)
        except discord.LoginFailure:
            raise ValueError("DISCORD_TOKEN was refused by Discord (invalid or reset)") from None
        except (aiohttp.ClientError, OSError) as exc:  # no route, no DNS, refused, timed out
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise ValueError(f"cannot reach Discord to log in: {reason}") from None
        app.coach.channels.register(PLATFORM, DiscordChannels(client, client.turns.threads))
        try:
            async with operations(app):  # schedules and the grading queue, posting via REST
                await client.connect()
        finally:
            app.coach.channels.unregister(PLATFORM)
