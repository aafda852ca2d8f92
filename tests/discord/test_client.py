"""Start-up: token errors, intents, commands synced only when they change."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import discord
import pytest
from discord import app_commands

from bot.adapters.discord.client import CruscibleClient
from bot.adapters.discord.main import serve
from bot.adapters.discord.sync import sync_if_changed
from bot.app import App
from tests.discord.fake import APP_ID, TOKEN, FakeDiscord

PRIVILEGED = (1 << 1) | (1 << 8) | (1 << 15)  # members, presences, message content


def command_puts(fake: FakeDiscord) -> int:
    return len(fake.calls_to("PUT", f"/applications/{APP_ID}/commands"))


async def test_the_tree_is_synced_once_and_not_again_on_a_second_start(
    bot: CruscibleClient, fake: FakeDiscord, app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = fake.calls_to("PUT", f"/applications/{APP_ID}/commands")[0]
    assert {c["name"] for c in first.json} == {
        "challenge",
        "env",
        "admin",
        "submit",
        "results",
        "logs",
        "leaderboard",
        "tradeoffs",
        "contest",
        "cancel",
        "privacy",
        "timezone",
    }
    # guild install, guild context only: https://discord.com/developers/docs/interactions/
    # application-commands#interaction-contexts
    assert all((c["integration_types"], c["contexts"]) == ([0], [0]) for c in first.json)
    assert all((c["integration_types"], c["contexts"]) == ([0], [0]) for c in fake.commands)
    admin = next(c for c in first.json if c["name"] == "admin")
    assert int(admin["default_member_permissions"]) == 1 << 5  # hidden from members
    puts, identified = command_puts(fake), len(fake.identifies)

    monkeypatch.setenv("DISCORD_TOKEN", TOKEN)
    again = asyncio.create_task(serve(app))
    await fake.wait_for(lambda: len(fake.identifies) > identified)
    again.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await again
    assert command_puts(fake) == puts


async def test_a_changed_tree_is_synced_again(fake: FakeDiscord, tmp_path: Path) -> None:
    client = discord.Client(intents=discord.Intents.default())
    tree = app_commands.CommandTree(client)

    async def ping(interaction: discord.Interaction) -> None: ...

    tree.add_command(app_commands.Command(name="ping", description="ping", callback=ping))
    await client.login(TOKEN)
    try:
        before = command_puts(fake)
        assert await sync_if_changed(tree, tmp_path, APP_ID)
        assert not await sync_if_changed(tree, tmp_path, APP_ID)
        tree.add_command(app_commands.Command(name="pong", description="pong", callback=ping))
        assert await sync_if_changed(tree, tmp_path, APP_ID)
        assert command_puts(fake) == before + 2
    finally:
        await client.close()


async def test_no_privileged_intent_is_asked_for(bot: CruscibleClient, fake: FakeDiscord) -> None:
    assert fake.identifies
    for identify in fake.identifies:
        assert identify["intents"] & PRIVILEGED == 0
        assert identify["intents"] & 1  # guilds


async def test_a_missing_token_is_a_one_line_error(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    with pytest.raises(ValueError, match="DISCORD_TOKEN is not set") as caught:
        await serve(app)
    assert "\n" not in str(caught.value)


async def test_an_invalid_token_is_a_one_line_error(
    fake: FakeDiscord, app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISCORD_TOKEN", "not-the-token")
    with pytest.raises(ValueError, match="DISCORD_TOKEN was refused") as caught:
        await serve(app)
    assert "\n" not in str(caught.value)


async def test_discord_out_of_reach_is_a_one_line_error(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No route, no DNS or a refused connection at login: one line, not a traceback."""
    from discord.http import Route

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # held, never listening: the login is refused
        monkeypatch.setattr(Route, "BASE", f"http://127.0.0.1:{closed.getsockname()[1]}/api/v10")
        monkeypatch.setenv("DISCORD_TOKEN", TOKEN)
        with pytest.raises(ValueError, match="cannot reach Discord to log in") as caught:
            await serve(app)
    assert "\n" not in str(caught.value)


def test_the_cli_prints_the_error_and_exits_2(data_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DISCORD_TOKEN"}
    env["CRUSCIBLE_DATA_DIR"] = str(data_dir)
    res = subprocess.run(
        [sys.executable, "-m", "bot", "run", "--platform", "discord"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "error: DISCORD_TOKEN is not set (the bot token from the developer portal)"
    ]
