"""The coach's neutral Message rendered as Block Kit, within Slack's limits.

Every limit below is Slack's (https://api.slack.com/reference/block-kit/blocks, …/block-elements,
…/composition-objects); what would break one is cut, shortened or left out here, so that Slack
never answers ``invalid_blocks`` or ``msg_too_long`` to a message of ours.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from bot.core.message import Button, Message, Tone

Block = dict[str, Any]
log = logging.getLogger(__name__)

SLASH = "/cruscible"

# https://api.slack.com/reference/block-kit/blocks
MAX_BLOCKS = 50  # per message; a modal or Home tab takes 100 (…/reference/surfaces/views)
VIEW_MAX_BLOCKS = 100
HEADER_MAX = 150  # header: plain_text
SECTION_MAX = 3000  # section: text
FIELD_MAX = 2000  # section: each of its fields
FIELDS_PER_SECTION = 10  # section: fields
BUTTONS_PER_ACTIONS = 25  # actions: elements
# https://api.slack.com/reference/block-kit/composition-objects#text: any text object
TEXT_MAX = 3000
# https://api.slack.com/reference/block-kit/block-elements#button
BUTTON_TEXT_MAX = 75
ACTION_ID_MAX = 255
BUTTON_VALUE_MAX = 2000
# Slack refuses a message whose blocks carry too much text in all with msg_blocks_too_long,
# at about 13,000 characters in practice (undocumented: github.com/slackapi/bolt-js/issues/2509;
# https://api.slack.com/reference/block-kit/blocks#markdown gives 12,000 in all for markdown).
TEXT_BUDGET = 12_000
CUT = "_… cut to fit in a Slack message._"
# chat.postMessage refuses a longer `text` with msg_too_long (40,000:
# https://api.slack.com/methods/chat.postMessage#errors); the notification needs far less
FALLBACK_MAX = 3000
BAR_WIDTH = 20
TONE_EMOJI = {
    Tone.INFO: "",
    Tone.SUCCESS: ":white_check_mark: ",
    Tone.WARNING: ":warning: ",
    Tone.ERROR: ":x: ",
}

FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)[\s#]*$")
BULLET = re.compile(r"^(\s*)[-*+]\s+")
TABLE_ROW = re.compile(r"^\s*\|.*\|\s*$")
TABLE_RULE = re.compile(r"^:?-{3,}:?$")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)")
LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")
ESCAPED = re.compile(r"\\([!-/:-@\[-`{-~])")  # markdown's backslash escapes
CORE_COMMAND = re.compile(r"(?<![\w/<])/(submit|provision|challenge|leaderboard|results)\b")
HELD = re.compile("\ue000(\\d+)\ue001")
ITALIC = re.compile(r"(?<![*\w])\*(?![\s*])(.+?)(?<![\s*])\*(?![*\w])")
BOLD = re.compile(r"\*\*(.+?)\*\*|__(.+?)__")
STRIKE = re.compile(r"~~(.+?)~~")
BR = re.compile(r"<br\s*/?>", re.I)


def escape(text: str) -> str:
    """Slack's three control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def mrkdwn(markdown: str) -> str:
    """CommonMark-ish markdown → Slack mrkdwn: **bold** → *bold*, links, headings, tables.

    Code fences stay fences (their language tag dropped); tables become bulleted lines; the
    core's ``/submit``-style commands become ``/cruscible submit``.
    """
    out: list[str] = []
    lines = markdown.splitlines()
    fence: str | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        opening = FENCE.match(line)
        if fence is not None:
            if opening and opening.group(1).startswith(fence):
                fence = None
                out.append("```")
            else:
                out.append(escape(line))
        elif opening:
            fence = opening.group(1)
            out.append("```")
        elif TABLE_ROW.match(line):
            rows = []
            while i < len(lines) and TABLE_ROW.match(lines[i]):
                rows.append(lines[i])
                i += 1
            out.extend(_table(rows))
            continue
        elif heading := HEADING.match(line):
            out.append(f"*{_inline(heading.group(1).replace('**', ''))}*")
        else:
            bullet = BULLET.match(line)
            if bullet:
                line = f"{bullet.group(1)}• {line[bullet.end() :]}"
            out.append(_inline(line))
        i += 1
    if fence is not None:
        out.append("```")
    return "\n".join(out)


def _inline(text: str) -> str:
    parts, pos = [], 0
    for m in CODE_SPAN.finditer(text):
        parts.append(_emphasis(text[pos : m.start()]))
        parts.append(f"`{escape(m.group(2))}`")
        pos = m.end()
    parts.append(_emphasis(text[pos:]))
    return "".join(parts)


def _emphasis(text: str) -> str:
    held: list[str] = []

    def hold(m: re.Match[str]) -> str:
        held.append(m.group(1))
        return f"\ue000{len(held) - 1}\ue001"

    text = ESCAPED.sub(hold, text)
    text = CORE_COMMAND.sub(rf"{SLASH} \1", text)  # the core's commands are subcommands here
    text = escape(BR.sub("\n", text))
    text = IMAGE.sub(_image, text)
    text = LINK.sub(lambda m: f"<{m.group(2)}|{m.group(1)}>", text)
    text = ITALIC.sub(r"_\1_", text)
    text = BOLD.sub(lambda m: f"*{m.group(1) or m.group(2)}*", text)
    text = STRIKE.sub(r"~\1~", text)
    return HELD.sub(lambda m: escape(held[int(m.group(1))]), text)


def _image(m: re.Match[str]) -> str:
    alt, src = m.group(1) or "image", m.group(2)
    if src.startswith(("http://", "https://")):
        return f"<{src}|{alt}>"
    return f"{alt} (attached: {src})"


def _table(rows: list[str]) -> list[str]:
    """A markdown table as lines (Slack has none): the header in bold, a bullet per row."""
    cells = [[c.strip() for c in re.split(r"(?<!\\)\|", row.strip().strip("|"))] for row in rows]
    cells = [r for r in cells if not all(TABLE_RULE.match(c) for c in r if c)]
    lines = [" · ".join(_inline(BR.sub(" — ", c)) for c in r if c) for r in cells]
    return [f"*{lines[0]}*", *(f"• {line}" for line in lines[1:])] if lines else []


def split_text(text: str, limit: int = SECTION_MAX) -> list[str]:
    """Cut mrkdwn into pieces of at most ``limit`` chars at line ends; code fences reopen."""
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    in_fence = False
    room = limit - 8  # space for a closing and a reopening fence
    for line in text.split("\n"):
        for piece in [line[k : k + room] for k in range(0, len(line), room)] or [""]:
            if current and size + len(piece) + 1 > room:
                chunks.append("\n".join(current) + ("\n```" if in_fence else ""))
                current, size = (["```"], 4) if in_fence else ([], 0)
            current.append(piece)
            size += len(piece) + 1
            if piece.startswith("```"):
                in_fence = not in_fence
    text_left = "\n".join(current)
    if text_left.replace("```", "").strip():
        chunks.append(text_left)
    return chunks


def progress_bar(fraction: float) -> str:
    fraction = min(max(fraction, 0.0), 1.0)
    filled = round(fraction * BAR_WIDTH)
    return f"`{'█' * filled}{'░' * (BAR_WIDTH - filled)}` {fraction:.0%}"


def header(title: str) -> Block:
    text = {"type": "plain_text", "text": truncate(title, HEADER_MAX), "emoji": True}
    return {"type": "header", "text": text}


def section(text: str) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def context(text: str) -> Block:
    """One mrkdwn element (a context takes at most 10), cut to a text object's 3000."""
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": truncate(text, TEXT_MAX)}]}


def button(b: Button) -> Block | None:
    """The button, or None when its action id is longer than Slack accepts (255)."""
    if len(b.action) > ACTION_ID_MAX:
        log.warning("button %r left out: its action id is over %d chars", b.label, ACTION_ID_MAX)
        return None
    label = truncate(b.label or b.action, BUTTON_TEXT_MAX)
    element: Block = {
        "type": "button",
        "text": {"type": "plain_text", "text": label, "emoji": True},
        "action_id": b.action,
        "value": b.action[:BUTTON_VALUE_MAX],
    }
    if b.primary:
        element["style"] = "primary"
    return element


def to_blocks(msg: Message, *, max_blocks: int = MAX_BLOCKS) -> list[Block]:
    """Header, progress, body sections, fields, buttons, footer; the body is cut to fit."""
    head = [header(TONE_EMOJI[msg.tone] + msg.title)] if msg.title else []
    if msg.progress is not None:
        head.append(context(progress_bar(msg.progress)))
    body = [section(chunk) for chunk in split_text(mrkdwn(msg.body)) if chunk.strip()]
    inline = [f for f in msg.fields if f.inline]
    for k in range(0, len(inline), FIELDS_PER_SECTION):
        texts = [
            {
                "type": "mrkdwn",
                "text": truncate(f"*{escape(f.name)}*\n{escape(f.value)}", FIELD_MAX),
            }
            for f in inline[k : k + FIELDS_PER_SECTION]
        ]
        body.append({"type": "section", "fields": texts})
    for f in msg.fields:
        if not f.inline:
            body += [section(c) for c in split_text(f"*{escape(f.name)}*\n{mrkdwn(f.value)}")]
    elements = [e for e in map(button, msg.buttons) if e is not None]
    tail = [
        {"type": "actions", "elements": elements[k : k + BUTTONS_PER_ACTIONS]}
        for k in range(0, len(elements), BUTTONS_PER_ACTIONS)
    ]
    if msg.footer:
        tail.append(context(mrkdwn(msg.footer)))
    room = max_blocks - len(head) - len(tail)
    kept, size = 0, 0
    for block in body:
        size += _text_size(block)
        if kept >= room - 1 or size > TEXT_BUDGET:
            break
        kept += 1
    if kept < len(body):
        body = body[:kept] + [context(CUT)]
    return head + body + tail


def _text_size(block: Block) -> int:
    text = block.get("text", {}).get("text", "")
    return len(text) + sum(len(f["text"]) for f in block.get("fields", []))


def fallback_text(msg: Message) -> str:
    """The notification text that goes with the blocks (escaped: it mentions no one)."""
    return escape(truncate(msg.title or msg.text(), FALLBACK_MAX))
