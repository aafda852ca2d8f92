"""A neutral :class:`Message` as Discord embeds and attachments, within Discord's limits."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

import discord

from bot.core.message import Field, Message, Tone

TITLE_MAX = 256
DESCRIPTION_MAX = 4096
FIELD_NAME_MAX = 256
FIELD_VALUE_MAX = 1024
FIELDS_MAX = 25
FOOTER_MAX = 2048
EMBEDS_MAX = 10
TOTAL_MAX = 6000  # every title, description, field and footer of one message together
FILES_MAX = 10
HEAD_MAX = 3500  # what an overlong body shows before pointing at its .md attachment

COLOURS = {
    Tone.INFO: discord.Colour.blurple(),
    Tone.SUCCESS: discord.Colour.green(),
    Tone.WARNING: discord.Colour.gold(),
    Tone.ERROR: discord.Colour.red(),
}
BAR_CELLS = 20
FENCE = "```"


@dataclass
class Rendered:
    """What one Discord message carries; files are fresh objects, good for one send."""

    embeds: list[discord.Embed]
    files: list[discord.File]


def render(msg: Message) -> Rendered:
    """Embeds for ``msg``: a long body is split across embeds; what still does not fit in one
    message goes, in full, into an attached .md file, the embed keeping its head."""
    body = msg.body
    if msg.progress is not None:
        body = f"{body}\n{progress_bar(msg.progress)}".strip()
    files = [discord.File(p, filename=p.name) for p in msg.files]
    fields = [_field(f) for f in msg.fields[:FIELDS_MAX]]
    embeds = _embeds(msg, split_markdown(body, DESCRIPTION_MAX), fields)
    if len(embeds) > EMBEDS_MAX or sum(len(e) for e in embeds) > TOTAL_MAX:
        name = f"{slug(msg.title)}.md"
        head = (split_markdown(body, HEAD_MAX) or [""])[0]
        description = f"{head}\n\n*… the full text is attached as `{name}`.*".strip()
        budget = TOTAL_MAX - len(clip(msg.title, TITLE_MAX)) - len(description)
        budget -= len(clip(msg.footer, FOOTER_MAX))
        shown = []
        for f in fields:
            budget -= len(f.name) + len(f.value)
            if budget < 0:
                break
            shown.append(f)
        embeds = _embeds(msg, [description], shown)
        full = "\n\n".join([body, *(f"**{f.name}**: {f.value}" for f in msg.fields)])
        files.insert(0, discord.File(io.BytesIO(full.strip().encode()), filename=name))
    files = files[:FILES_MAX]
    image = next((f.filename for f in files if f.filename.endswith(".png")), None)
    if image:
        embeds[-1].set_image(url=f"attachment://{image}")
    return Rendered(embeds, files)


def _field(f: Field) -> Field:
    return Field(clip(f.name, FIELD_NAME_MAX), clip(f.value, FIELD_VALUE_MAX) or "\u200b", f.inline)


def _embeds(msg: Message, chunks: list[str], fields: list[Field]) -> list[discord.Embed]:
    """One embed per chunk: the title on the first, fields and footer on the last."""
    colour = COLOURS[msg.tone]
    embeds = [discord.Embed(description=chunk or None, colour=colour) for chunk in chunks or [""]]
    embeds[0].title = clip(msg.title, TITLE_MAX)
    last = embeds[-1]
    for f in fields:
        last.add_field(name=f.name, value=f.value, inline=f.inline)
    if msg.footer:
        last.set_footer(text=clip(msg.footer, FOOTER_MAX))
    return embeds


def progress_bar(fraction: float) -> str:
    done = round(max(0.0, min(1.0, fraction)) * BAR_CELLS)
    return f"`{'█' * done}{'░' * (BAR_CELLS - done)}` {fraction:.0%}"


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:60] or "message"


def split_markdown(text: str, limit: int) -> list[str]:
    """Chunks of at most ``limit`` characters, cut between lines; code fences are re-opened."""
    chunks: list[str] = []
    lines: list[str] = []
    size = 0
    fence: str | None = None  # the opening line of the code block the cut falls in
    reserve = len(FENCE) + 1  # room to close a fence at the end of a chunk
    for line in _wrap(text.splitlines(), limit // 2):
        if lines and size + len(line) + 1 > limit - reserve:
            chunks.append("\n".join([*lines, FENCE] if fence else lines))
            lines = [fence] if fence else []
            size = len(fence) + 1 if fence else 0
        lines.append(line)
        size += len(line) + 1
        if line.lstrip().startswith(FENCE):
            fence = None if fence else line.strip()
    if lines:
        chunks.append("\n".join(lines))
    return chunks


def _wrap(lines: list[str], width: int) -> list[str]:
    """Hard-cut lines longer than ``width`` (a chunk always holds at least one line)."""
    out: list[str] = []
    for line in lines:
        while len(line) > width:
            out.append(line[:width])
            line = line[width:]
        out.append(line)
    return out
