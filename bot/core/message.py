"""The neutral message every adapter renders: Discord embeds, Slack blocks, the terminal."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path


class Tone(StrEnum):
    INFO = "info"
    SUCCESS = "success"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True)
class Button:
    label: str
    action: str  # stable id, e.g. "start:rate-limiter"; adapters use it as custom_id / action_id
    primary: bool = False


@dataclass(frozen=True)
class Field:
    name: str
    value: str
    inline: bool = True


@dataclass
class Message:
    title: str
    body: str = ""  # markdown
    fields: list[Field] = field(default_factory=list)
    buttons: list[Button] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    tone: Tone = Tone.INFO
    footer: str = ""
    progress: float | None = None  # 0..1 while a slow action runs; adapters may draw a bar

    def text(self) -> str:
        """A plain-text rendering, for logs of what was posted and for tests."""
        parts = [self.title, self.body]
        parts += [f"{f.name}: {f.value}" for f in self.fields]
        parts += [f"[{b.label}]" for b in self.buttons]
        parts.append(self.footer)
        return "\n".join(p for p in parts if p)
