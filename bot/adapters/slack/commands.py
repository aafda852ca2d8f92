"""`/cruscible` subcommands: the core's text commands plus the submit form and admin settings."""

from __future__ import annotations

import html
import logging
import re
import shlex
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.adapters.slack import files, modal
from bot.adapters.slack.blocks import SLASH
from bot.adapters.slack.daily import local_today, post_daily, todays_thread
from bot.adapters.slack.failures import delivering, error_code, where_label
from bot.adapters.slack.outbox import SlackOutbox, message_ref
from bot.core import commands, views
from bot.core.coach import Coach, CoachError
from bot.core.communities import ConfigError, settings_message
from bot.core.message import Message, Tone
from bot.core.outbox import Actor, DeliveryFailed
from bot.store import Community

log = logging.getLogger(__name__)

SLACK_LINK = re.compile(r"<([#@!]?)([^|>]+)(?:\|[^>]*)?>")
ADMIN_HELP = f"""\
`{SLASH} submit` — a form to submit your service's URL or a public git URL of your code; or \
share a .zip/.tar.gz of your code with me in a direct message, with the challenge id as its text
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
            case ["submit", challenge, url] | ["submit", challenge, url, "keep"]:
                await submit(
                    inv.coach, inv.community, inv.actor, challenge, url, inv.out,
                    keep=words[-1] == "keep",
                )  # fmt: skip
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
        try:
            await out.reply(views.error("Something went wrong on my side; it has been logged."))
        except DeliveryFailed as exc:  # the interaction is over too: the log is all there is
            log.warning("could not tell the learner about %s: %s", what, exc.reason)


async def submit(
    coach: Coach,
    community: Community,
    actor: Actor,
    challenge: str,
    url: str,
    out: SlackOutbox,
    *,
    archive: Path | None = None,
    keep: bool = False,
) -> None:
    """Grade ``url`` (a service, or a public git URL of code) or a stored ``archive`` (``url``
    is then its file name) for ``community`` (its boards and contests count it); results go in
    the thread of today's post when it is this challenge. ``keep``: code keeps running after
    the grade, until the environment's TTL."""
    where = await todays_thread(coach.communities, community, challenge)
    thread = None
    if where is not None:
        out.post_channel = where[0]
        thread = message_ref(*where)  # a ref SlackChannels can thread under after a restart
    try:
        await coach.submit(
            actor, challenge, url, out, thread=thread, community=community, archive=archive,
            keep=keep,
        )  # fmt: skip
    except CoachError as exc:
        await out.reply(views.error(str(exc)))


async def submit_file(
    coach: Coach,
    client: AsyncWebClient,
    community: Community,
    actor: Actor,
    text: str,
    shared: list[dict[str, Any]],
    out: SlackOutbox,
) -> None:
    """Code shared in the app's DM: the message's first word names the challenge (today's by
    default); the first file is downloaded (capped, see :mod:`bot.adapters.slack.files`) and
    queued. Refusals (a wrong type, too large, an unknown challenge) are told privately."""
    words = unescape(text).split()
    if words[:1] == ["submit"]:  # "submit rate-limiter" reads as naturally as "rate-limiter"
        words = words[1:]
    challenge = words[0] if words else coach.catalog.for_day(local_today(community)).id
    try:
        coach.challenge(challenge)
        if len(shared) != 1:
            raise CoachError("share one .zip or .tar.gz of your code at a time")
        archive = await files.download(client, shared[0], coach.settings.data_dir)
    except CoachError as exc:
        await out.reply(views.error(str(exc)))
        return
    name = str(shared[0].get("name") or archive.name)
    await submit(coach, community, actor, challenge, name, out, archive=archive)


async def open_submit_form(inv: Invocation, challenge: str | None) -> None:
    choices = [(c.id, c.spec.title) for c in inv.coach.catalog]
    selected = challenge or inv.coach.catalog.for_day(local_today(inv.community)).id
    view = modal.submit_modal(choices, selected, inv.channel)
    try:
        await inv.client.views_open(trigger_id=inv.trigger_id, view=view)
    except SlackApiError as exc:
        # a trigger_id lasts 3 seconds (https://api.slack.com/interactivity/handling#modal_responses)
        log.warning("the submit form did not open: %s", error_code(exc))
        example = f"{SLASH} submit {selected} https://your-service.example.com"
        await inv.out.reply(
            views.error(f"The form could not open in time; submit in one line instead: `{example}`")
        )


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
    channel = commands.without_hosted(args[5:])  # … START END [CHANNEL] [hosted]
    if args[:2] == ["contest", "create"] and len(channel) == 1:
        problem = await channel_problem(inv.client, channel[0])
        if problem is not None:
            await out.reply(views.error(f"The contest is not created: {problem}."))
            return
    if args[:1] in (["contest"], ["leaderboard"]):  # the core's community operations
        text = shlex.join(["admin", *args])
        await commands.dispatch(
            inv.coach, inv.actor, text, out, community=inv.community, admin=True
        )
        return
    cid = inv.community.id
    try:
        match args:
            case [] | ["show"]:
                community = inv.community
            case ["channel"] | ["channel", "here"]:
                community = await set_channel(inv, inv.channel)
            case ["channel", channel]:
                community = await set_channel(inv, channel)
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
    await out.reply(settings_message(community))


async def set_channel(inv: Invocation, channel: str) -> Community:
    """The community's channel, once Slack confirms the bot can post there (else ConfigError,
    and the setting stays as it was)."""
    problem = await channel_problem(inv.client, channel)
    if problem is not None:
        raise ConfigError(f"The channel is unchanged: {problem}.")
    return await inv.coach.communities.configure(inv.community.id, channel_id=channel)


def user_group(word: str) -> str:
    """The id of a user group as `/cruscible` receives a mention of it (``subteam^S123``)."""
    group = word.removeprefix("subteam^")
    if not re.fullmatch(r"S[A-Z0-9]+", group):
        raise ConfigError(f"{word!r} is not a user group: mention one, like @backend-learners")
    return group


async def channel_problem(client: AsyncWebClient, channel: str) -> str | None:
    """Why Cruscible could not post in ``channel``, or None when it can (joining a public
    channel it is not in yet: plots are shared there, which needs membership).

    Asks Slack rather than guessing: conversations.info
    (https://api.slack.com/methods/conversations.info) says whether it exists, is archived,
    private, and whether the bot is a member; a private channel the bot is not in is invisible
    to it (``channel_not_found``); only public channels can be joined
    (https://api.slack.com/methods/conversations.join).
    """
    try:
        info = (await client.conversations_info(channel=channel))["channel"]
    except SlackApiError as exc:
        code = error_code(exc)
        if code == "channel_not_found":
            return (
                "I cannot see that channel: if it is a private channel, invite me first with "
                "`/invite @Cruscible` there, then set it again"
            )
        return f"Slack would not tell me about that channel ({code}); try again, or pick another"
    where = where_label(channel, info.get("name"))
    if info.get("is_im") or info.get("is_mpim"):
        return "a direct message is not a channel: name a channel, like #daily-challenge"
    if info.get("is_archived"):
        return f"{where} is archived: unarchive it or choose another channel"
    if info.get("is_member"):
        return None
    if info.get("is_private"):
        return f"I am not in {where}: `/invite @Cruscible` there, then set it again"
    try:
        await client.conversations_join(channel=channel)
    except SlackApiError as exc:
        return f"I could not join {where} ({error_code(exc)}): `/invite @Cruscible` there"
    return None


async def post_now(inv: Invocation) -> None:
    community = inv.community
    if not community.channel_id:
        await inv.out.reply(views.error(f"Set a channel first: `{SLASH} admin channel #channel`"))
        return
    day = local_today(community)
    try:
        async with delivering(community.channel_id, client=inv.client):
            await post_daily(
                inv.client,
                community,
                inv.coach.today(day),
                communities=inv.coach.communities,
                day=day,
            )
    except DeliveryFailed as exc:
        await inv.out.reply(views.error(f"Today's challenge could not be posted: {exc.reason}"))
        return
    await inv.out.reply(Message(title="Today's challenge is posted", tone=Tone.SUCCESS))
