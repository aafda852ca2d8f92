"""The discord.py client: the command tree, persistent buttons, one coach for every guild."""

from __future__ import annotations

import logging
from typing import Any

import discord

from bot.adapters.discord.commands import build_tree
from bot.adapters.discord.outbox import Threads
from bot.adapters.discord.sync import sync_if_changed
from bot.adapters.discord.turn import PLATFORM, Turn, Turns
from bot.adapters.discord.views import ActionButton
from bot.app import App
from bot.core.commands import press

log = logging.getLogger(__name__)


class CruscibleClient(discord.Client):
    """Default intents only: slash commands and buttons arrive as interactions, not messages."""

    def __init__(self, app: App, **options: Any) -> None:
        super().__init__(
            intents=discord.Intents.default(),
            allowed_mentions=discord.AllowedMentions.none(),
            **options,
        )
        self.app = app
        self.turns = Turns(app.coach, Threads())
        self.tree = build_tree(self)

    async def setup_hook(self) -> None:
        """Before the gateway: buttons of any past message work again; commands synced if new."""
        self.add_dynamic_items(ActionButton)
        assert self.application_id is not None  # known once logged in
        if await sync_if_changed(self.tree, self.app.settings.data_dir, self.application_id):
            log.info("slash commands synced")

    async def press(self, interaction: discord.Interaction, action: str) -> None:
        """A button (*Start*, *Show trade-offs*) pressed on any message, however old."""

        async def use(t: Turn) -> None:
            await press(t.coach, t.actor, action, t.out, community=t.community)

        await self.turns.run(interaction, use)

    async def on_guild_available(self, guild: discord.Guild) -> None:
        await self._register(guild)

    async def on_guild_join(self, guild: discord.Guild) -> None:
        await self._register(guild)

    async def _register(self, guild: discord.Guild) -> None:
        await self.turns.coach.communities.get(PLATFORM, str(guild.id), guild.name)
