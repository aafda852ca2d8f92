"""`/cruscible` subcommands: the core's text commands plus the submit form and admin settings."""

from __future__ import annotations

import html
import logging
import re
import shlex
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.adapters.slack import modal
from bot.adapters.slack.blocks import SLASH
from bot.adapters.slack.daily import local_today, post_daily, todays_thread
from bot.adapters.slack.outbox import SlackOutbox, message_ref
from bot.core import commands, views
from bot.core.coach import Coach, CoachError
from bot.core.communities import ConfigError, settings_message
from bot.core.message import Message, Tone
from bot.core.outbox import Actor
from bot.store import Community

log = logging.getLogger(__name__)

SLACK_LINK = re.compile(r"<([#@!]?)([^|>]+)(?:\|[^>]*)?>")
ADMIN_HELP = f"""\
`{SLASH} submit` — a form to submit your service's URL
`{SLASH} admin show` · `admin channel [#channel|here]` · `admin post-time HH:MM` · \
`admin timezone Area/City` · `admin ping @group|off` (who the daily post and contest openings \
notify) · `admin post` (post today's challenge now) — settings, for admins"""


def slashed(help_text: str) -> str:
    """The core's help with each `command` written as `/cruscible command`."""
    return re.sub(r"`([^`]+)`", rf"`{SLASH} \1`", help_text)


def help_message() -> Message:
    body = f"{slashed(commands.HELP)}\n{ADMIN_HELP}\n{slashed(commands.ADMIN_HELP)}"
    return Message(title="Cruscible commands", body=body)


def unescape(text: str) -> str:
    """Slack's escaped text → plain words: ``<#C1|general>`` → ``C1``, ``<http://x>`` → URL."""
    return html.unescape(SLACK_LINK.sub(lambda m: m.group(2), text))


@dataclass
class Invocation:
    """A `/cruscible` command as the adapter received it."""

    coach: Coach
    client: AsyncWebClient
    community: Community
    actor: Actor
    out: SlackOutbox
    channel: str
    trigger_id: str


async def run(inv: Invocation, text: str) -> None:
    """Route one `/cruscible` command; the learner reads a private error on any failure."""
    text = unescape(text)
    try:
        words: list[str] | None = shlex.split(text)
    except ValueError:
        words = None  # the core's dispatch says what is wrong with it
    async with apologising(inv.out, f"{SLASH} {text}"):
        match words:
            case [] | ["help"]:
                await inv.out.reply(help_message())
            case ["admin", *args]:
                await admin(inv, args)
            case ["submit"]:
                await open_submit_form(inv, None)
            case ["submit", challenge]:
                await open_submit_form(inv, challenge)
            case ["submit", challenge, url]:
                await submit(inv.coach, inv.community, inv.actor, challenge, url, inv.out)
            case _:
                await commands.dispatch(
                    inv.coach, inv.actor, text, inv.out, community=inv.community
                )


@asynccontextmanager
async def apologising(out: SlackOutbox, what: str) -> AsyncIterator[None]:
    """An unexpected failure is logged, and the learner told privately rather than left waiting."""
    try:
        yield
    except Exception:
        log.exception("%s failed", what)
        await out.reply(views.error("Something went wrong on my side; it has been logged."))


async def submit(
    coach: Coach, community: Community, actor: Actor, challenge: str, url: str, out: SlackOutbox
) -> None:
    """Grade ``url`` for ``community`` (its boards and contests count it); results go in the
    thread of today's post when it is this challenge."""
    where = await todays_thread(coach.communities, community, challenge)
    thread = None
    if where is not None:
        out.post_channel = where[0]
        thread = message_ref(*where)  # a ref SlackChannels can thread under after a restart
    try:
        await coach.submit(actor, challenge, url, out, thread=thread, community=community)
    except CoachError as exc:
        await out.reply(views.error(str(exc)))


async def open_submit_form(inv: Invocation, challenge: str | None) -> None:
    choices = [(c.id, c.spec.title) for c in inv.coach.catalog]
    selected = challenge or inv.coach.catalog.for_day(local_today(inv.community)).id
    view = modal.submit_modal(choices, selected, inv.channel)
    await inv.client.views_open(trigger_id=inv.trigger_id, view=view)


async def is_admin(client: AsyncWebClient, user: str) -> bool:
    try:
        info = (await client.users_info(user=user))["user"]
    except SlackApiError as exc:
        log.warning("users.info %s: %s", user, exc.response.get("error"))
        return False
    return bool(info.get("is_admin") or info.get("is_owner"))


async def admin(inv: Invocation, args: list[str]) -> None:
    """Workspace settings, contests and boards; only Slack admins and owners may use them."""
    out, communities = inv.out, inv.coach.communities
    if not await is_admin(inv.client, inv.out.user):
        await out.reply(views.error("Only workspace admins and owners can change the settings."))
        return
    if args[:1] in (["contest"], ["leaderboard"]):  # the core's community operations
        text = shlex.join(["admin", *args])
        await commands.dispatch(
            inv.coach, inv.actor, text, out, community=inv.community, admin=True
        )
        return
    cid = inv.community.id
    note = ""
    try:
        match args:
            case [] | ["show"]:
                community = inv.community
            case ["channel"] | ["channel", "here"]:
                community = await communities.configure(cid, channel_id=inv.channel)
                note = await join(inv.client, inv.channel)
            case ["channel", channel]:
                community = await communities.configure(cid, channel_id=channel)
                note = await join(inv.client, channel)
            case ["post-time", hhmm]:
                community = await communities.configure(cid, post_time=hhmm)
            case ["timezone", tz]:
                community = await communities.configure(cid, timezone=tz)
            case ["ping", "off" | "none"]:
                community = await communities.configure(cid, ping_role="")
            case ["ping", group]:
                community = await communities.configure(cid, ping_role=user_group(group))
            case ["post"]:
                await post_now(inv)
                return
            case _:
                raise ConfigError(f"unknown admin command {' '.join(args)!r} — try `{SLASH} help`")
    except ConfigError as exc:
        await out.reply(views.error(str(exc)))
        return
    settings = settings_message(community)
    settings.body = note
    await out.reply(settings)


def user_group(word: str) -> str:
    """The id of a user group as `/cruscible` receives a mention of it (``subteam^S123``)."""
    group = word.removeprefix("subteam^")
    if not re.fullmatch(r"S[A-Z0-9]+", group):
        raise ConfigError(f"{word!r} is not a user group: mention one, like @backend-learners")
    return group


async def join(client: AsyncWebClient, channel: str) -> str:
    """Join the channel (plots are shared there); what to do when that is impossible."""
    try:
        await client.conversations_join(channel=channel)
    except SlackApiError as exc:
        return (
            f"I could not join that channel ({exc.response.get('error')}): "
            "invite me there with `/invite @Cruscible`."
        )
    return ""


async def post_now(inv: Invocation) -> None:
    community = inv.community
    if not community.channel_id:
        await inv.out.reply(views.error(f"Set a channel first: `{SLASH} admin channel #channel`"))
        return
    day = local_today(community)
    await post_daily(
        inv.client, community, inv.coach.today(day), communities=inv.coach.communities, day=day
    )
    await inv.out.reply(Message(title="Today's challenge is posted", tone=Tone.SUCCESS))
