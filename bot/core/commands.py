"""Text commands (the console, Slack's ``/cruscible``) and button actions, routed to the coach."""

from __future__ import annotations

import shlex

from bot.core import views
from bot.core.coach import Coach, CoachError
from bot.core.message import Message
from bot.core.outbox import Actor, Outbox

HELP = """\
- `today` — today's challenge
- `list` — every challenge · `show ID` — one challenge
- `provision ID` — start your private infrastructure (bundle by private message)
- `env` — your environments · `env extend ENV` · `env destroy ENV`
- `submit ID URL` — grade your service
- `results` — your results · `leaderboard [ID]` · `tradeoffs ID`"""


def help_message() -> Message:
    return Message(title="Cruscible commands", body=HELP)


async def dispatch(coach: Coach, actor: Actor, text: str, out: Outbox) -> None:
    """Run one text command; refusals become a private error reply, never an exception."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        await out.reply(views.error(f"could not read that command: {exc}"))
        return
    try:
        await _run(coach, actor, words, out)
    except CoachError as exc:
        await out.reply(views.error(str(exc)))


async def press(coach: Coach, actor: Actor, action: str, out: Outbox) -> None:
    """A button press (``start:ID``, ``tradeoffs:ID``)."""
    verb, _, arg = action.partition(":")
    words = {"start": ["provision", arg], "tradeoffs": ["tradeoffs", arg]}.get(verb)
    if words is None or not arg:
        await out.reply(views.error(f"unknown action {action!r}"))
        return
    await dispatch(coach, actor, shlex.join(words), out)


async def _run(coach: Coach, actor: Actor, words: list[str], out: Outbox) -> None:
    match words:
        case [] | ["help"]:
            await out.reply(help_message())
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
        case ["submit", cid, url]:
            await coach.submit(actor, cid, url, out)
        case ["results"]:
            await out.reply(await coach.results(actor))
        case ["leaderboard"]:
            await out.reply(await coach.leaderboard())
        case ["leaderboard", cid]:
            await out.reply(await coach.leaderboard(cid))
        case ["tradeoffs", cid]:
            await out.reply(await coach.tradeoffs(actor, cid))
        case _:
            raise CoachError(f"unknown command or arguments: {' '.join(words)!r} — try `help`")
