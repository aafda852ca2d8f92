"""`serve`: credentials checked at start-up, Socket Mode, and OAuth installs into many workspaces."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bot.adapters.slack.channels import SlackChannels
from bot.adapters.slack.main import serve
from bot.app import App
from bot.core.message import Message
from bot.core.outbox import DeliveryFailed, DirectMessageClosed
from bot.scheduler import jobs
from bot.store import Community
from tests.slack.conftest import Workspace, install
from tests.slack.fakeslack import (
    APP_TOKEN,
    BOT_TOKEN,
    OAUTH_CODE,
    OAUTH_TEAM,
    OAUTH_TOKEN,
    SIGNING_SECRET,
    FakeSlack,
)

SLACK_VARS = [
    "SLACK_BOT_TOKEN",
    "SLACK_SIGNING_SECRET",
    "SLACK_APP_TOKEN",
    "SLACK_CLIENT_ID",
    "SLACK_CLIENT_SECRET",
    "SLACK_API_URL",
]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in SLACK_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


async def test_a_missing_token_is_a_one_line_value_error(
    app: App, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("SLACK_SIGNING_SECRET", SIGNING_SECRET)
    with pytest.raises(ValueError, match=r"^SLACK_BOT_TOKEN is not set \(the xoxb- token"):
        await serve(app)


async def test_a_refused_token_is_a_value_error(
    app: App, fake: FakeSlack, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("SLACK_BOT_TOKEN", "xoxb-revoked")
    clean_env.setenv("SLACK_SIGNING_SECRET", SIGNING_SECRET)
    clean_env.setenv("SLACK_API_URL", fake.api_url)
    with pytest.raises(ValueError, match="^SLACK_BOT_TOKEN was refused by Slack: invalid_auth$"):
        await serve(app, port=0, host="127.0.0.1")
    assert [c.method for c in fake.calls] == ["auth.test"]


async def test_an_unreachable_api_is_a_value_error(app: App, clean_env: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    clean_env.setenv("SLACK_BOT_TOKEN", BOT_TOKEN)
    clean_env.setenv("SLACK_SIGNING_SECRET", SIGNING_SECRET)
    clean_env.setenv("SLACK_API_URL", f"http://127.0.0.1:{port}/api/")
    with pytest.raises(ValueError, match=f"^cannot reach the Slack API at http://127.0.0.1:{port}"):
        await serve(app, port=0, host="127.0.0.1")


def test_the_cli_prints_the_error_and_exits_2(data_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in SLACK_VARS}
    env["CRUSCIBLE_DATA_DIR"] = str(data_dir / "cli")  # its own store, nothing to reconcile
    done = subprocess.run(
        [sys.executable, "-m", "bot", "run", "--platform", "slack"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "error: SLACK_BOT_TOKEN is not set" in done.stderr


async def test_socket_mode_acknowledges_and_answers(
    app: App, fake: FakeSlack, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("SLACK_BOT_TOKEN", BOT_TOKEN)
    clean_env.setenv("SLACK_APP_TOKEN", APP_TOKEN)
    clean_env.setenv("SLACK_API_URL", fake.api_url)
    server = asyncio.create_task(serve(app, socket_mode=True))
    try:
        payload = {
            "team_id": "T0SOCKET",
            "team_domain": "socket",
            "channel_id": "C1",
            "user_id": "U1",
            "user_name": "u1",
            "command": "/cruscible",
            "text": "help",
            "response_url": fake.response_url("socket"),
            "trigger_id": "trigger-socket",
        }
        envelope = await fake.send_envelope("slash_commands", payload)
        await fake.wait_for(lambda c: c.method == "response_url" and "/cruscible submit" in c.dump)
        assert any(ack.get("envelope_id") == envelope for ack in fake.socket_acks)
        assert fake.calls_to("apps.connections.open")[0].token == APP_TOKEN
        # the community operations run, posting through the registered Slack channels
        assert isinstance(app.coach.channels.get("slack"), SlackChannels)
        assert jobs._ops(app.settings.scheduler_url) is not None
    finally:
        server.cancel()
        with pytest.raises(asyncio.CancelledError):
            await server
    assert app.coach.channels.get("slack") is None


async def test_oauth_install_then_commands_use_that_workspace_token(oauth_slack: Workspace) -> None:
    fake = oauth_slack.fake
    assert "client_id=111.222" in await install(oauth_slack)
    (access,) = fake.calls_to("oauth.v2.access")
    assert access.args["code"] == OAUTH_CODE

    await oauth_slack.sender.command("admin show", user="U9", team=OAUTH_TEAM)
    await fake.wait_for(lambda c: c.method == "response_url" and "Only workspace admins" in c.dump)
    assert fake.calls_to("users.info")[0].token == OAUTH_TOKEN
    assert (await oauth_slack.bot.client_for(OAUTH_TEAM)).token == OAUTH_TOKEN

    # posts without an interaction use the token of the community's workspace
    channels = SlackChannels(oauth_slack.bot.client_for)
    installed = Community(id=0, platform="slack", platform_id=OAUTH_TEAM, channel_id="COAUTH")
    ref = await channels.post(installed, Message(title="Leaderboard"))
    (post,) = fake.calls_to("chat.postMessage")
    assert post.token == OAUTH_TOKEN and ref == f"COAUTH/{post.answer['ts']}"
    elsewhere = Community(id=0, platform="slack", platform_id="T0GONE", channel_id="C1")
    with pytest.raises(DeliveryFailed, match="not installed in workspace T0GONE"):
        await channels.post(elsewhere, Message(title="not installed there"))
    with pytest.raises(DirectMessageClosed):
        await channels.dm(None, "T0GONE:U1", Message(title="not installed there"))
