"""`help` shows one command a line on every surface: the terminal, Discord and Slack."""

from __future__ import annotations

import re

from rich.console import Console

from bot.adapters.console import render as render_console
from bot.adapters.discord.render import render as render_discord
from bot.adapters.slack import commands as slack_commands
from bot.adapters.slack.blocks import to_blocks
from bot.core.commands import ADMIN_HELP, HELP, help_message

# The first word of each command the help lists, e.g. "cancel", "results", "privacy".
LEADS = [re.match(r"- `(\w+)", line).group(1) for line in HELP.splitlines()]  # type: ignore[union-attr]


def one_per_line(text: str, leads: list[str]) -> None:
    """Each command starts its own line, and no line holds two of them."""
    lines = text.splitlines()
    for lead in leads:
        starting = [ln for ln in lines if re.match(rf"^\W*(/cruscible )?{lead}\b", ln.strip())]
        assert starting, f"no line starts with {lead!r}:\n{text}"
    for ln in lines:
        starts = [lead for lead in leads if re.search(rf"\b{lead} —", ln)]
        assert len(starts) <= 1, f"two commands on one line: {ln!r}"


def test_every_line_of_the_help_is_a_list_item() -> None:
    assert len(LEADS) == len(HELP.splitlines()) >= 10
    assert all(line.startswith("- `") for line in (HELP + "\n" + ADMIN_HELP).splitlines())


def test_the_terminal_shows_one_command_a_line() -> None:
    console = Console(record=True, width=100, color_system=None)
    console.print(render_console(help_message()))
    text = console.export_text()
    one_per_line(text.replace("`", ""), LEADS)


def test_discord_shows_one_command_a_line() -> None:
    rendered = render_discord(help_message())
    description = "\n".join(e.description or "" for e in rendered.embeds)
    one_per_line(description.replace("`", ""), LEADS)


def test_slack_shows_one_command_a_line() -> None:
    blocks = to_blocks(slack_commands.help_message())
    text = "\n".join(
        b["text"]["text"] for b in blocks if b.get("type") == "section" and "text" in b
    )
    one_per_line(text.replace("`", ""), LEADS)
