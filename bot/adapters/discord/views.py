"""Discord UI: persistent action buttons (they survive restarts) and the submit modal."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, cast

import discord

from bot.core.message import Button

ACTION = r"[a-z]+:[a-z0-9-]+"  # "start:rate-limiter", "tradeoffs:rate-limiter"; core decides


class Presser(Protocol):
    """The client behind a press: runs the coach's action for the interaction."""

    async def press(self, interaction: discord.Interaction, action: str) -> None: ...


class ActionButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=ACTION):
    """A button whose custom id is the coach's action id; matched again after any restart."""

    def __init__(self, action: str, label: str = "", primary: bool = False) -> None:
        style = discord.ButtonStyle.primary if primary else discord.ButtonStyle.secondary
        super().__init__(discord.ui.Button(label=label or action, style=style, custom_id=action))
        self.action = action

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction,
        item: discord.ui.Item[Any],
        match: re.Match[str],
        /,
    ) -> ActionButton:
        return cls(match.string)

    async def callback(self, interaction: discord.Interaction) -> None:
        await cast(Presser, interaction.client).press(interaction, self.action)


def button_view(buttons: list[Button]) -> discord.ui.View | None:
    """A persistent view (no timeout) holding the message's buttons, or None without any."""
    if not buttons:
        return None
    view = discord.ui.View(timeout=None)
    for b in buttons:
        view.add_item(ActionButton(b.action, b.label, b.primary))
    return view


class SubmitModal(discord.ui.Modal):
    """Asks what to grade when ``/submit`` has neither a URL nor an attachment: a running
    service's URL or a git repository's (code we build and run). Discord caps a text input's
    label at 45 characters and its placeholder at 100
    (https://discord.com/developers/docs/components/reference#text-input)."""

    url: discord.ui.TextInput[SubmitModal] = discord.ui.TextInput(
        label="Your service's URL, or your git repository",
        placeholder="https://my-service.example.com or https://github.com/you/repo.git",
        max_length=500,
    )

    def __init__(
        self,
        challenge_id: str,
        on_url: Callable[[discord.Interaction, str], Awaitable[None]],
    ) -> None:
        super().__init__(title=f"Submit — {challenge_id}"[:45], timeout=900)
        self._on_url = on_url

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await self._on_url(interaction, self.url.value)
