"""Settings, from environment variables prefixed ``CRUSCIBLE_``."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "cruscible"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CRUSCIBLE_", extra="ignore")

    data_dir: Path = Field(default_factory=_default_data_dir)
    database_url: str | None = None  # default: SQLite in data_dir
    backend: str = "local"
    env_ttl: timedelta = timedelta(hours=2)
    env_max_ttl: timedelta = timedelta(hours=8)
    env_extend_by: timedelta = timedelta(hours=1)
    max_envs_per_owner: int = 2
    max_envs_total: int = 50
    allow_loopback_targets: bool = True
    allow_private_targets: bool = False
    log_level: str = "WARNING"

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir / 'cruscible.db'}"

    @property
    def reports_dir(self) -> Path:
        return self.data_dir / "reports"
