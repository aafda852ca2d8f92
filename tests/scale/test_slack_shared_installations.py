"""Two Slack replicas (the real bolt app in HTTP mode, each its own process state and engine)
over one real PostgreSQL store, against the local Slack fake: an install begun on one replica
finishes on the other (the OAuth state is shared), and the workspace it installed is then
served by both — commands answered with its token and scheduled posts made with it."""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from bot.adapters.slack.channels import SlackChannels
from bot.adapters.slack.config import SlackConfig
from bot.app import App, open_app
from bot.config import Settings
from bot.core.message import Message
from bot.store import Community
from tests.slack.conftest import OAUTH_CONFIG, Workspace, serve_bot, until
from tests.slack.fakeslack import OAUTH_CODE, OAUTH_TEAM, OAUTH_TOKEN, SIGNING_SECRET, FakeSlack


@asynccontextmanager
async def replica(db_url: str, root: Path, name: str, fake: FakeSlack) -> AsyncIterator[Workspace]:
    """A Slack front end over the shared store: its own data directory, app and engine."""
    data = root / name
    data.mkdir(mode=0o755)
    settings = Settings(database_url=db_url, data_dir=data)
    config = SlackConfig(signing_secret=SIGNING_SECRET, api_url=fake.api_url, **OAUTH_CONFIG)
    app: App
    async with open_app(settings, reconcile=False) as app:
        async for workspace in serve_bot(app, fake, config):
            yield workspace


@pytest.fixture
async def two(db_url: str) -> AsyncIterator[tuple[Workspace, Workspace]]:
    root = Path(tempfile.mkdtemp(prefix="cruscible-slack-replicas-"))
    root.chmod(0o755)
    fake = FakeSlack(admins={"UADMIN"})
    await fake.start()
    try:
        async with AsyncExitStack() as stack:
            first = await stack.enter_async_context(replica(db_url, root, "one", fake))
            second = await stack.enter_async_context(replica(db_url, root, "two", fake))
            yield first, second
    finally:
        await fake.close()
        shutil.rmtree(root, ignore_errors=True)


def base(workspace: Workspace) -> str:
    return workspace.url.removesuffix("/slack/events")


async def test_a_workspace_installed_through_one_replica_is_served_by_the_other(
    two: tuple[Workspace, Workspace],
) -> None:
    one, other = two
    fake = one.fake
    assert fake.tokens.get(OAUTH_TOKEN) is None  # not installed yet

    # the install page comes from one replica, Slack's redirect lands on the other
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base(one)}/slack/install", allow_redirects=False) as page:
            html, cookie = await page.text(), page.headers["Set-Cookie"].split(";")[0]
        state = re.search(r"state=([\w-]+)", html)
        assert page.status == 200 and state is not None
        callback = f"{base(other)}/slack/oauth_redirect?code={OAUTH_CODE}&state={state.group(1)}"
        async with http.get(callback, headers={"Cookie": cookie}) as done:
            assert done.status == 200, await done.text()
        # the state was consumed in the shared store: replaying it on the first one fails
        replay = f"{base(one)}/slack/oauth_redirect?code={OAUTH_CODE}&state={state.group(1)}"
        async with http.get(replay, headers={"Cookie": cookie}) as again:
            assert again.status != 200
    assert fake.tokens.get(OAUTH_TOKEN) == OAUTH_TEAM

    # both replicas find the installation and answer the workspace's commands with its token
    for workspace in (one, other):
        store = workspace.bot.bolt.installation_store
        assert store is not None
        found = await store.async_find_installation(enterprise_id=None, team_id=OAUTH_TEAM)
        assert found is not None and found.bot_token == OAUTH_TOKEN
        before = len(fake.calls_to("users.info"))
        answer = await workspace.sender.command("admin show", user="U9", team=OAUTH_TEAM)
        assert answer.status == 200

        async def asked(before: int = before) -> bool:
            return len(fake.calls_to("users.info")) > before

        await until(asked)
        info = fake.calls_to("users.info")[before]  # this replica's own call
        assert info.token == OAUTH_TOKEN and info.answer["ok"]
        await workspace.settle()

    # a scheduled post made by the replica that did not install it uses the workspace's token
    home = Community(id=0, platform="slack", platform_id=OAUTH_TEAM, channel_id="COAUTH")
    await SlackChannels(one.bot.client_for).post(home, Message(title="Today's challenge"))
    (post,) = fake.calls_to("chat.postMessage")
    assert post.answer["ok"] and post.token == OAUTH_TOKEN
