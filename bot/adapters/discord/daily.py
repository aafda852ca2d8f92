"""The daily post in a community's channel, recorded so that results can thread under it."""

from __future__ import annotations

from bot.adapters.discord.channels import ping_kwargs
from bot.adapters.discord.client import CruscibleClient
from bot.adapters.discord.outbox import public, send_kwargs
from bot.adapters.discord.turn import local_day
from bot.core.message import Message
from bot.store import Community


def challenge_of(message: Message) -> str:
    """The challenge a daily post is about: the one its *Start* button starts."""
    for button in message.buttons:
        verb, _, challenge = button.action.partition(":")
        if verb == "start" and challenge:
            return challenge
    raise ValueError(f"{message.title!r} has no Start button: not a daily post")


async def post_daily(client: CruscibleClient, community: Community, message: Message) -> str:
    """Post ``message`` in the community's channel and record it; return the message id.

    A second call on the same local day posts nothing and returns the first post's id.
    """
    communities = client.turns.coach.communities
    day = local_day(community)
    earlier = await communities.daily_post(community.id, day)
    if earlier is not None and earlier.message_ref:
        return earlier.message_ref
    if not community.channel_id:
        raise ValueError(f"{community.name or community.platform_id} has no channel set")
    challenge = challenge_of(message)
    channel = client.get_partial_messageable(
        int(community.channel_id), guild_id=int(community.platform_id)
    )
    kwargs = send_kwargs(public(message))
    if community.ping_role:
        kwargs |= ping_kwargs(community.ping_role)
    sent = await channel.send(**kwargs)
    await communities.record_daily_post(
        community.id, day, challenge, community.channel_id, str(sent.id)
    )
    return str(sent.id)
