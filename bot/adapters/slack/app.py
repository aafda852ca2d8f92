"""The bolt AsyncApp: web client, single-token or OAuth (multi-workspace) auth, listeners."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from slack_bolt.async_app import AsyncApp
from slack_bolt.oauth.async_oauth_settings import AsyncOAuthSettings
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.oauth.installation_store.sqlalchemy import AsyncSQLAlchemyInstallationStore
from slack_sdk.oauth.state_store.sqlalchemy import AsyncSQLAlchemyOAuthStateStore
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bot.adapters.slack.config import SlackConfig
from bot.adapters.slack.listeners import Inflight, register
from bot.core.coach import Coach

BOT_SCOPES = [
    "commands",
    "chat:write",
    "chat:write.public",
    "channels:join",
    "channels:read",
    "groups:read",
    "im:write",
    "files:write",
    "users:read",
]
INSTALLATIONS_DB = "slack-installations.db"
OAUTH_STATE_TTL_S = 600
RATE_LIMIT_RETRIES = 3


def web_client(token: str | None, api_url: str) -> AsyncWebClient:
    """A Web API client at ``api_url`` that waits and retries when Slack answers 429."""
    client = AsyncWebClient(token=token, base_url=api_url)
    client.retry_handlers.append(
        AsyncRateLimitErrorRetryHandler(max_retry_count=RATE_LIMIT_RETRIES)
    )
    return client


@dataclass
class SlackBot:
    bolt: AsyncApp
    inflight: Inflight

    async def client_for(self, team_id: str) -> AsyncWebClient:
        """A client with the bot token of workspace ``team_id`` (for scheduled posts)."""
        store = self.bolt.installation_store
        if store is None:
            return self.bolt.client
        bot = await store.async_find_bot(enterprise_id=None, team_id=team_id)
        if bot is None:
            raise LookupError(f"Cruscible is not installed in workspace {team_id}")
        base = self.bolt.client
        return AsyncWebClient(
            token=bot.bot_token, base_url=base.base_url, retry_handlers=base.retry_handlers.copy()
        )


async def oauth_settings(config: SlackConfig, engine: AsyncEngine) -> AsyncOAuthSettings:
    """Installations and OAuth states in SQL tables of their own (created when missing)."""
    assert config.client_id is not None and config.client_secret is not None
    installations = AsyncSQLAlchemyInstallationStore(client_id=config.client_id, engine=engine)
    states = AsyncSQLAlchemyOAuthStateStore(expiration_seconds=OAUTH_STATE_TTL_S, engine=engine)
    await installations.create_tables()
    await states.create_tables()
    return AsyncOAuthSettings(
        client_id=config.client_id,
        client_secret=config.client_secret,
        scopes=BOT_SCOPES,
        installation_store=installations,
        state_store=states,
    )


@asynccontextmanager
async def open_slack(coach: Coach, config: SlackConfig, data_dir: Path) -> AsyncIterator[SlackBot]:
    """The bolt app with the coach's listeners; OAuth installations in ``data_dir``."""
    engine = None
    settings = None
    if config.oauth:
        engine = create_async_engine(f"sqlite+aiosqlite:///{data_dir / INSTALLATIONS_DB}")
        settings = await oauth_settings(config, engine)
    bolt = AsyncApp(
        name="cruscible",
        client=web_client(config.bot_token, config.api_url),
        signing_secret=config.signing_secret or "",
        oauth_settings=settings,
    )
    bot = SlackBot(bolt, Inflight())
    register(bolt, coach, bot.inflight)
    try:
        yield bot
    finally:
        bot.inflight.cancel()
        if engine is not None:
            await engine.dispose()
