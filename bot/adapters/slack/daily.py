"""The daily post in a workspace's channel, recorded so that it is made once per local day."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import date, datetime
from zoneinfo import ZoneInfo

from slack_sdk.web.async_client import AsyncWebClient

from bot.adapters.slack.blocks import fallback_text, to_blocks
from bot.adapters.slack.outbox import parse_ref
from bot.core.communities import Communities
from bot.core.message import Message
from bot.store import Community

_posting: defaultdict[int, asyncio.Lock] = defaultdict(asyncio.Lock)  # one poster per community


def local_today(community: Community) -> date:
    return datetime.now(ZoneInfo(community.timezone)).date()


def challenge_of(message: Message) -> str:
    """The challenge a daily post is about, from its stable *Start* action id."""
    for b in message.buttons:
        verb, _, challenge = b.action.partition(":")
        if verb == "start" and challenge:
            return challenge
    raise ValueError(f"{message.title!r} has no Start button: not a daily post")


async def post_daily(
    client: AsyncWebClient,
    community: Community,
    message: Message,
    *,
    communities: Communities,
    day: date | None = None,
) -> str:
    """Post ``message`` in the community's channel and record it; returns the post's ts.

    A second call for the same local day posts nothing and returns the first post's ts.
    """
    if not community.channel_id:
        raise ValueError(f"workspace {community.name or community.platform_id} has no channel set")
    day = day or local_today(community)
    challenge = challenge_of(message)
    async with _posting[community.id]:
        done = await communities.daily_post(community.id, day)
        if done is not None and done.message_ref:
            return done.message_ref
        resp = await client.chat_postMessage(
            channel=community.channel_id,
            text=fallback_text(message),
            blocks=to_blocks(message),
            unfurl_links=False,
        )
        ts: str = resp["ts"]
        await communities.record_daily_post(community.id, day, challenge, community.channel_id, ts)
        return ts


async def todays_thread(
    communities: Communities, community: Community, challenge_id: str
) -> tuple[str, str] | None:
    """``(channel, ts)`` of today's post when it is about ``challenge_id``: results go under it.

    The post is recorded as a bare ts (``post_daily``) or as a ``"<channel>/<ts>"`` ref (the
    scheduler's, through ``SlackChannels``).
    """
    post = await communities.daily_post(community.id, local_today(community))
    if post is None or post.challenge != challenge_id or not post.message_ref:
        return None
    return parse_ref(post.message_ref, post.channel_id)
