"""Text commands (the console, Slack's ``/cruscible``) and button actions, routed to the coach."""

from __future__ import annotations

import shlex

from bot.core import views
from bot.core.coach import Coach, CoachError
from bot.core.communities import ConfigError
from bot.core.contests import contest_message, parse_local, standings_message
from bot.core.message import Message
from bot.core.outbox import Actor, Outbox
from bot.store import Community, Contest

HELP = """\
- `today` — today's challenge
- `list` — every challenge · `show ID` — one challenge
- `provision ID` — start your private infrastructure (bundle by private message)
- `env` — your environments · `env extend ENV` · `env destroy ENV`
- `submit ID URL|GIT_URL [keep]` — grade your service, or your code (a public git URL; in the \
terminal also a folder or .zip/.tar.gz), built and run by us on equal resources, then stopped \
(`keep`: kept running until your environment's TTL)
- `logs [SUBMISSION]` — the full logs of your code (your latest, or `sub-…`), by DM
- `cancel` — cancel your queued or running grade
- `results` — your results and streak · `leaderboard [ID]` · `tradeoffs ID`
- `contest` — this week's contest · `contest standings [N]`
- `privacy on` — hide you from public boards · `privacy off` — show you again
- `timezone Area/City` — the days your streak counts in"""

ADMIN_HELP = """\
- `admin contest create ID START END [CHANNEL] [hosted]` — e.g. `2026-11-30T09:00 \
2026-12-07T09:00`; `hosted`: only code we run on equal resources is ranked
- `admin contest list` · `admin contest cancel N`
- `admin leaderboard [all|ID|contest N]` — one self-updating board message in the channel"""


def help_message() -> Message:
    """Every command, one to a line: a markdown list, so that every surface keeps the lines
    apart (CommonMark joins the lines of a paragraph: https://spec.commonmark.org/0.31.2/#paragraphs)."""
    return Message(title="Cruscible commands", body=HELP)


async def dispatch(
    coach: Coach,
    actor: Actor,
    text: str,
    out: Outbox,
    *,
    community: Community | None = None,
    admin: bool = False,
) -> None:
    """Run one text command; refusals become a private error reply, never an exception.

    ``community`` is where the command was typed (contests, boards and results are theirs);
    ``admin`` says the platform granted its admin right (``admin …`` commands).
    """
    try:
        coach.limits.take(coach.owner(actor))
        words = shlex.split(text)
    except ValueError as exc:
        await out.reply(views.error(f"could not read that command: {exc}"))
        return
    except CoachError as exc:
        await out.reply(views.error(str(exc)))
        return
    try:
        await _run(coach, actor, words, out, community, admin)
    except (CoachError, ConfigError) as exc:
        await out.reply(views.error(str(exc)))


ACTIONS = {"start": "provision", "tradeoffs": "tradeoffs", "extend": "env extend"}


async def press(
    coach: Coach, actor: Actor, action: str, out: Outbox, *, community: Community | None = None
) -> None:
    """A button press (``start:ID``, ``tradeoffs:ID``, ``extend:ENV``)."""
    verb, _, arg = action.partition(":")
    command = ACTIONS.get(verb)
    if command is None or not arg:
        await out.reply(views.error(f"unknown action {action!r}"))
        return
    await dispatch(coach, actor, f"{command} {shlex.quote(arg)}", out, community=community)


async def _run(
    coach: Coach,
    actor: Actor,
    words: list[str],
    out: Outbox,
    community: Community | None,
    admin: bool,
) -> None:
    match words:
        case [] | ["help"]:
            await out.reply(help_message())
        case ["admin", *rest]:
            if not admin or community is None:
                raise CoachError("admin commands are for the community's admins, in the community")
            await _admin(coach, actor, rest, out, community)
        case ["today"]:
            await out.reply(coach.today())
        case ["list"] | ["challenges"]:
            await out.reply(coach.list_challenges())
        case ["show", cid]:
            await out.reply(coach.show(cid))
        case ["provision" | "start", cid]:
            await coach.provision(actor, cid, out)
        case ["env"] | ["env", "status"]:
            await out.reply(await coach.env_status(actor))
        case ["env", "extend", env_id]:
            await out.reply(await coach.env_extend(actor, env_id))
        case ["env", "destroy" | "down", env_id]:
            await out.reply(await coach.env_destroy(actor, env_id))
        case ["submit", cid, url] | ["submit", cid, url, "keep"]:  # a path: the terminal only
            await coach.submit(
                actor, cid, url, out, community=community, local_paths=actor.platform == "console",
                keep=words[-1] == "keep",
            )  # fmt: skip
        case ["logs"] | ["logs", _]:
            await coach.send_logs(actor, words[1] if len(words) == 2 else None, out)
        case ["cancel"]:
            await out.reply(await coach.cancel(actor))
        case ["results"]:
            await out.reply(await coach.results(actor))
        case ["leaderboard"]:
            await out.reply(await coach.leaderboard(community=community))
        case ["leaderboard", cid]:
            await out.reply(await coach.leaderboard(cid, community=community))
        case ["tradeoffs", cid]:
            await out.reply(await coach.tradeoffs(actor, cid))
        case ["privacy", "on" | "off" as state]:
            await out.reply(await coach.set_privacy(actor, public=state == "off"))
        case ["timezone", zone]:
            await out.reply(await coach.set_timezone(actor, zone))
        case ["contest", *rest]:
            await _contest(coach, rest, out, community)
        case _:
            raise CoachError(f"unknown command or arguments: {' '.join(words)!r} — try `help`")


async def _contest(
    coach: Coach, words: list[str], out: Outbox, community: Community | None
) -> None:
    if community is None:
        raise CoachError("contests belong to a community: ask in its channel")
    match words:
        case []:
            contest = await coach.contests.current(community)
            if contest is None:
                await out.reply(Message(title="Contests", body="No contest here yet."))
                return
            entries = await coach.contests.standings(contest)
            await out.reply(contest_message(contest, entries, coach.clock()))
        case ["standings", *number]:
            contest = await _pick(coach, community, number)
            entries = await coach.contests.standings(contest)
            final = contest.standings_at is not None
            await out.reply(standings_message(contest, entries, final=final))
        case _:
            raise CoachError("try `contest` or `contest standings [N]`")


async def _pick(coach: Coach, community: Community, number: list[str]) -> Contest:
    """The contest numbered ``number[0]`` in the community, or its current one."""
    if number:
        if not number[0].lstrip("#").isdigit():
            raise CoachError(f"{number[0]!r} is not a contest number")
        contest = await coach.contests.get(int(number[0].lstrip("#")))
        if contest is None or contest.community_id != community.id:
            raise CoachError(f"there is no contest {number[0]} here")
        return contest
    contest = await coach.contests.current(community)
    if contest is None:
        raise CoachError("no contest here yet")
    return contest


HOSTED_WORDS = frozenset({"hosted", "hosted-only", "--hosted-only"})


def without_hosted(words: list[str]) -> list[str]:
    """``words`` less the flag of a hosted-only contest."""
    return [w for w in words if w.lower() not in HOSTED_WORDS]


async def _admin(
    coach: Coach, actor: Actor, words: list[str], out: Outbox, community: Community
) -> None:
    match words:
        case ["contest", "create", cid, start, end, *rest] if len(without_hosted(rest)) <= 1:
            channel = without_hosted(rest)
            contest = await coach.contests.create(
                community,
                cid,
                parse_local(start, community.timezone),
                parse_local(end, community.timezone),
                created_by=actor.id,
                channel_id=channel[0] if channel else None,
                hosted_only=len(channel) < len(rest),
            )
            await out.reply(contest_message(contest, [], coach.clock()))
        case ["contest", "list"]:
            contests = await coach.contests.of(community)
            lines = [
                f"#{c.id} {c.challenge}: {c.starts_at:%Y-%m-%d %H:%M} → "
                f"{c.ends_at:%Y-%m-%d %H:%M} UTC"
                for c in contests
            ]
            await out.reply(Message(title="Contests", body="\n".join(lines) or "None yet."))
        case ["contest", "cancel", number]:
            contest = await _pick(coach, community, [number])
            await coach.contests.cancel(community, contest.id)
            await out.reply(Message(title=f"Contest #{contest.id} cancelled"))
        case ["leaderboard", *scope] if len(scope) <= 2:
            await coach.boards.place(community, _scope(scope))
            await out.reply(Message(title="Leaderboard placed", body="It updates itself."))
        case _:
            raise CoachError(f"unknown admin command {' '.join(words)!r}:\n{ADMIN_HELP}")


def _scope(words: list[str]) -> str:
    match words:
        case [] | ["all"]:
            return "all"
        case ["contest", number]:
            return f"contest:{number.lstrip('#')}"
        case [cid]:
            return f"challenge:{cid}"
    raise CoachError("a board is `all`, a challenge id, or `contest N`")
