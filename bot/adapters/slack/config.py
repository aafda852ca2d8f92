"""The Slack credentials, from environment variables, checked before anything starts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_API_URL = "https://slack.com/api/"


@dataclass(frozen=True)
class SlackConfig:
    signing_secret: str | None = None
    bot_token: str | None = None
    app_token: str | None = None
    client_id: str | None = None
    client_secret: str | None = None
    api_url: str = DEFAULT_API_URL
    # with token rotation on, a token is refreshed when it expires within this many minutes
    # (slack-bolt's default: https://api.slack.com/authentication/rotation)
    token_rotation_minutes: int = 120

    @property
    def oauth(self) -> bool:
        """Installed into many workspaces through OAuth (tokens in the installation store)."""
        return self.client_id is not None

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, socket_mode: bool) -> SlackConfig:
        """Read ``SLACK_*``; raises ValueError with a one-line reason when one is missing or bad."""

        def get(name: str) -> str | None:
            return env.get(name, "").strip() or None

        client_id, client_secret = get("SLACK_CLIENT_ID"), get("SLACK_CLIENT_SECRET")
        if (client_id is None) != (client_secret is None):
            raise ValueError("SLACK_CLIENT_ID and SLACK_CLIENT_SECRET go together (OAuth install)")
        bot_token, app_token = get("SLACK_BOT_TOKEN"), get("SLACK_APP_TOKEN")
        signing_secret = get("SLACK_SIGNING_SECRET")
        if socket_mode and client_id:
            raise ValueError(
                "Socket Mode serves one workspace: set SLACK_BOT_TOKEN, not SLACK_CLIENT_*"
            )
        if not client_id:
            if bot_token is None:
                raise ValueError("SLACK_BOT_TOKEN is not set (the xoxb- token of your Slack app)")
            if not bot_token.startswith("xoxb-"):
                raise ValueError("SLACK_BOT_TOKEN must be a bot token starting with xoxb-")
        if socket_mode:
            if app_token is None:
                raise ValueError("SLACK_APP_TOKEN is not set (Socket Mode needs the xapp- token)")
            if not app_token.startswith("xapp-"):
                raise ValueError("SLACK_APP_TOKEN must be an app-level token starting with xapp-")
        elif signing_secret is None:
            raise ValueError(
                "SLACK_SIGNING_SECRET is not set (HTTP mode verifies Slack's requests)"
            )
        api_url = get("SLACK_API_URL") or DEFAULT_API_URL
        if not api_url.startswith(("http://", "https://")):
            raise ValueError(f"SLACK_API_URL {api_url!r} is not an http(s) URL")
        return cls(
            signing_secret=signing_secret,
            bot_token=None if client_id else bot_token,
            app_token=app_token if socket_mode else None,
            client_id=client_id,
            client_secret=client_secret,
            api_url=api_url.rstrip("/") + "/",
        )
