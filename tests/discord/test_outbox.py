"""Edits of one message: serialised, progress coalesced, a settled message never overwritten."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any, cast

import discord

from bot.adapters.discord import outbox
from bot.adapters.discord.outbox import ORIGINAL, DiscordOutbox, Threads, parse_ref
from bot.core.message import Message


class Interaction(SimpleNamespace):
    def __init__(self) -> None:
        super().__init__(edits=[], created_at=discord.utils.utcnow())

    async def edit_original_response(self, **kwargs: Any) -> None:
        await asyncio.sleep(0.01)
        self.edits.append((time.monotonic(), kwargs["embeds"][0].title))


async def test_progress_edits_are_throttled_and_never_overwrite_the_result(monkeypatch) -> None:
    monkeypatch.setattr(outbox, "EDIT_EVERY_S", 0.2)
    interaction = Interaction()
    out = DiscordOutbox(cast(discord.Interaction, interaction), channel_id=1, threads=Threads())
    ref = await out.reply(Message(title="queued", progress=0.0))
    assert ref == ORIGINAL
    tasks = []
    for i in range(1, 30):
        tasks.append(asyncio.create_task(out.edit(ref, Message(title=f"p{i}", progress=i / 100))))
        await asyncio.sleep(0.01)
    await out.edit(ref, Message(title="done", progress=1.0))
    late = asyncio.create_task(out.edit(ref, Message(title="late", progress=0.5)))
    await asyncio.gather(*tasks, late)
    titles = [t for _, t in interaction.edits]
    assert titles[0] == "queued" and titles[-1] == "done"
    assert "late" not in titles
    assert len(titles) <= 5  # 30 progress messages in ~0.3 s, one edit per 0.2 s
    times = [t for t, title in interaction.edits[1:] if title.startswith("p")]
    assert all(b - a >= 0.19 for a, b in zip(times, times[1:], strict=False))


def test_message_refs() -> None:
    assert parse_ref("12/34") == (12, 34)
    assert parse_ref("34", 12) == (12, 34)
