"""The bolt AsyncApp: web client, single-token or OAuth (multi-workspace) auth, listeners."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from slack_bolt.async_app import AsyncApp
from slack_bolt.authorization.async_authorize import AsyncInstallationStoreAuthorize
from slack_bolt.oauth.async_oauth_settings import AsyncOAuthSettings
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.oauth.installation_store.sqlalchemy import AsyncSQLAlchemyInstallationStore
from slack_sdk.oauth.state_store.sqlalchemy import AsyncSQLAlchemyOAuthStateStore
from slack_sdk.oauth.token_rotation.async_rotator import AsyncTokenRotator
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bot.adapters.slack.config import SlackConfig
from bot.adapters.slack.lifecycle import register_lifecycle
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
    "files:read",  # code shared in the DM
    "im:history",  # message.im: the DM's shared files reach the app
    "users:read",
]
INSTALLATIONS_DB = "slack-installations.db"  # with a SQLite store: a file of their own
TABLES_LOCK = 0x736C6B  # the advisory lock key of creating slack-sdk's tables ("slk")
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
    rotator: AsyncTokenRotator | None = None
    rotation_minutes: int = 120
    removed: set[str] = field(default_factory=set)  # workspaces that removed the app
    _rotating: defaultdict[str, asyncio.Lock] = field(
        default_factory=lambda: defaultdict(asyncio.Lock)
    )

    async def forget(self, team_id: str) -> None:
        """The app was removed from ``team_id``: no client for it any more. With one token this
        is remembered in this process (the token is dead for good); with OAuth the deleted
        installation says so, until the workspace installs the app again."""
        self.removed.add(team_id)

    async def client_for(self, team_id: str) -> AsyncWebClient:
        """A client with the bot token of workspace ``team_id`` (for scheduled posts).

        With OAuth the token is the installation's; when token rotation is on and it expires
        within ``rotation_minutes``, slack-sdk's :class:`AsyncTokenRotator` refreshes it first
        and the installation store keeps the new one (as slack-bolt's authorize does for
        requests: https://api.slack.com/authentication/rotation). LookupError when the app is
        not installed there (or was removed: a revoked bot token deletes its bot record).
        """
        store = self.bolt.installation_store
        if store is None:  # one token: a workspace that removed the app is remembered here
            if team_id in self.removed:
                raise LookupError(f"Cruscible was removed from workspace {team_id}")
            return self.bolt.client
        async with self._rotating[team_id]:  # one refresh at a time: it spends the old token
            bot = await store.async_find_bot(enterprise_id=None, team_id=team_id)
            installation = await store.async_find_installation(enterprise_id=None, team_id=team_id)
            if bot is None or installation is None or installation.bot_token is None:
                raise LookupError(f"Cruscible is not installed in workspace {team_id}")
            if installation.bot_refresh_token is not None and self.rotator is not None:
                refreshed = await self.rotator.perform_token_rotation(
                    installation=installation, minutes_before_expiration=self.rotation_minutes
                )
                if refreshed is not None:
                    await store.async_save(refreshed)
                    installation = refreshed
        base = self.bolt.client
        return AsyncWebClient(
            token=installation.bot_token,
            base_url=base.base_url,
            retry_handlers=base.retry_handlers.copy(),
        )


async def oauth_settings(config: SlackConfig, engine: AsyncEngine) -> AsyncOAuthSettings:
    """Installations and OAuth states in slack-sdk's SQLAlchemy tables (created when missing;
    on PostgreSQL under an advisory lock, so replicas starting together create them once)."""
    assert config.client_id is not None and config.client_secret is not None
    installations = AsyncSQLAlchemyInstallationStore(client_id=config.client_id, engine=engine)
    states = AsyncSQLAlchemyOAuthStateStore(expiration_seconds=OAUTH_STATE_TTL_S, engine=engine)
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": TABLES_LOCK})
        await conn.run_sync(installations.metadata.create_all)
        await conn.run_sync(states.metadata.create_all)
    return AsyncOAuthSettings(
        client_id=config.client_id,
        client_secret=config.client_secret,
        scopes=BOT_SCOPES,
        installation_store=installations,
        state_store=states,
        token_rotation_expiration_minutes=config.token_rotation_minutes,
    )


def installations_engine(coach: Coach, data_dir: Path) -> tuple[AsyncEngine, bool]:
    """Where OAuth installations and states live, and whether that engine is this app's own.

    - a PostgreSQL store: the store's own database (and engine), shared by every replica, so a
      workspace installed through one replica is served by all of them, and an install begun
      on one may finish on another (the OAuth state is there too);
    - a SQLite store (one process): ``data_dir/slack-installations.db``, as before.
    """
    if coach.store.engine.dialect.name != "sqlite":
        return coach.store.engine, False
    return create_async_engine(f"sqlite+aiosqlite:///{data_dir / INSTALLATIONS_DB}"), True


@asynccontextmanager
async def open_slack(coach: Coach, config: SlackConfig, data_dir: Path) -> AsyncIterator[SlackBot]:
    """The bolt app with the coach's listeners; OAuth installations where
    :func:`installations_engine` says."""
    engine = None
    owned = False
    settings = None
    if config.oauth:
        engine, owned = installations_engine(coach, data_dir)
        settings = await oauth_settings(config, engine)
    client = web_client(config.bot_token, config.api_url)
    authorize = None
    if settings is not None:
        # slack-bolt's own authorize, given our client: its token rotator must call our API URL
        authorize = AsyncInstallationStoreAuthorize(
            logger=logging.getLogger("slack_bolt"),
            installation_store=settings.installation_store,
            client_id=config.client_id,
            client_secret=config.client_secret,
            token_rotation_expiration_minutes=config.token_rotation_minutes,
            client=client,
        )
    bolt = AsyncApp(
        name="cruscible",
        client=client,
        signing_secret=config.signing_secret or "",
        oauth_settings=settings,
        authorize=authorize,
    )
    rotator = authorize.token_rotator if authorize is not None else None
    bot = SlackBot(bolt, Inflight(), rotator, config.token_rotation_minutes)
    register_lifecycle(bolt, coach, on_removed=bot.forget)
    register(bolt, coach, bot.inflight)
    try:
        yield bot
    finally:
        bot.inflight.cancel()
        if engine is not None and owned:
            await engine.dispose()
