"""One interaction turned into a coach use-case: defer at once, then answer through the outbox."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Protocol, cast
from zoneinfo import ZoneInfo

import discord

from bot.adapters.discord.outbox import DiscordOutbox, Threads
from bot.core import views
from bot.core.coach import Coach, CoachError
from bot.core.communities import ConfigError
from bot.core.message import Message
from bot.core.outbox import Actor, DeliveryFailed
from bot.store import Community

log = logging.getLogger(__name__)

PLATFORM = "discord"


def actor_of(user: discord.User | discord.Member) -> Actor:
    return Actor(PLATFORM, str(user.id), user.display_name)


def local_day(community: Community) -> date:
    """Today in the community's timezone: the day its daily post belongs to."""
    return datetime.now(ZoneInfo(community.timezone)).date()


async def community_of(coach: Coach, interaction: discord.Interaction) -> Community | None:
    """The guild's configuration (created on first use); None outside a guild."""
    if interaction.guild_id is None:
        return None
    name = interaction.guild.name if interaction.guild else ""
    return await coach.communities.get(PLATFORM, str(interaction.guild_id), name)


@dataclass
class Turn:
    """What a use-case needs: the coach, who asked, where, and the outbox to answer through."""

    coach: Coach
    actor: Actor
    community: Community | None
    out: DiscordOutbox


class Turns:
    """Runs use-cases for interactions; one per client, sharing its coach and threads."""

    def __init__(self, coach: Coach, threads: Threads) -> None:
        self.coach = coach
        self.threads = threads

    async def run(
        self, interaction: discord.Interaction, use_case: Callable[[Turn], Awaitable[object]]
    ) -> None:
        """Defer (ephemeral, thinking) within Discord's 3 s, run ``use_case``, answer refusals."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        community = await community_of(self.coach, interaction)
        channel = int(community.channel_id) if community and community.channel_id else None
        out = DiscordOutbox(
            interaction, channel_id=channel or interaction.channel_id, threads=self.threads
        )
        actor = actor_of(interaction.user)
        try:
            self.coach.limits.take(self.coach.owner(actor))
            await use_case(Turn(self.coach, actor, community, out))
        except (CoachError, ConfigError) as exc:
            await self._answer(out, views.error(str(exc)))
        except Exception:
            log.exception("interaction %s failed", interaction.id)
            await self._answer(
                out, views.error("Something went wrong on our side; it has been logged.")
            )

    @staticmethod
    async def _answer(out: DiscordOutbox, msg: Message) -> None:
        try:
            await out.reply(msg)
        except DeliveryFailed as exc:  # the interaction is over: nothing left to answer
            log.info("answer not delivered: %s", exc.reason)


class Host(Protocol):
    """The client: every handler reaches the coach through its ``turns``."""

    turns: Turns


def turns_of(interaction: discord.Interaction) -> Turns:
    return cast(Host, interaction.client).turns
