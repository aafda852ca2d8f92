"""What an environment is asked to contain."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum


class Resource(StrEnum):
    """A kind of infrastructure a challenge may list."""

    POSTGRES = "postgres"
    REDIS = "redis"
    S3 = "s3"
    QUEUE = "queue"
    PROVIDER = "provider"  # a simulated third-party API (PROVIDER_URL), run from a module

    @classmethod
    def parse_list(cls, text: str) -> tuple[Resource, ...]:
        """Parse ``"postgres,redis"``; raises ValueError naming the unknown kind."""
        kinds: list[Resource] = []
        for raw in text.split(","):
            name = raw.strip().lower()
            if not name:
                continue
            try:
                kinds.append(cls(name))
            except ValueError:
                known = ", ".join(r.value for r in cls)
                raise ValueError(f"unknown resource {name!r} (known: {known})") from None
        if not kinds:
            raise ValueError("no resource named")
        return tuple(dict.fromkeys(kinds))


@dataclass(frozen=True)
class EnvironmentSpec:
    """Resources to start, for whom, for how long, and extra bundle variables."""

    resources: tuple[Resource, ...]
    owner: str = "local"
    ttl: timedelta = timedelta(hours=2)
    parameters: dict[str, str] = field(default_factory=dict)
    label: str = ""  # e.g. the challenge id; informational
    provider_module: str = ""  # ``python -m`` module serving PROVIDER_URL, when listed

    def __post_init__(self) -> None:
        if (Resource.PROVIDER in self.resources) != bool(self.provider_module):
            raise ValueError("a provider resource and a provider_module go together")
