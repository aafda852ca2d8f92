"""The terminal as a chat channel, rendered with rich."""

from __future__ import annotations

import itertools

from rich.console import Console, Group, RenderableType
from rich.markdown import Markdown
from rich.panel import Panel
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from bot.core.message import Message, Tone
from bot.core.outbox import Actor
from bot.store import Community

COLOURS = {Tone.INFO: "cyan", Tone.SUCCESS: "green", Tone.WARNING: "yellow", Tone.ERROR: "red"}
DM_PREVIEW_LINES = 40


def render(msg: Message, *, max_lines: int | None = None) -> RenderableType:
    parts: list[RenderableType] = []
    body = msg.body
    if max_lines is not None and body.count("\n") > max_lines:
        body = "\n".join(body.splitlines()[:max_lines]) + "\n\n*… (the rest is in the files below)*"
    if body:
        parts.append(Markdown(body))
    if msg.fields:
        grid = Table.grid(padding=(0, 2))
        for f in msg.fields:
            grid.add_row(Text(f.name, style="bold"), Text(f.value))
        parts.append(grid)
    if msg.buttons:
        parts.append(
            Text("  ").join(
                Text(f" {b.label} ", style="bold white on blue" if b.primary else "reverse")
                for b in msg.buttons
            )
        )
    for path in msg.files:
        parts.append(Text(f"📎 {path}", style="dim"))
    if msg.footer:
        parts.append(Text(msg.footer, style="dim italic"))
    return Group(*parts)


class ConsoleOutbox:
    """Implements the coach's Outbox on a terminal; progress edits draw a live bar."""

    def __init__(self, console: Console, channel: str = "#daily-challenge") -> None:
        self.console = console
        self.channel = channel
        self._ids = itertools.count(1)
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def _show(self, where: str, msg: Message, *, max_lines: int | None = None) -> str:
        self._stop_progress()
        ref = f"m{next(self._ids)}"
        self.console.print(
            Panel(
                render(msg, max_lines=max_lines),
                title=f"[bold]{msg.title}[/]",
                subtitle=where,
                subtitle_align="right",
                border_style=COLOURS[msg.tone],
            )
        )
        return ref

    async def post(self, msg: Message, *, thread: str | None = None) -> str:
        where = f"{self.channel} › thread" if thread else self.channel
        return self._show(where, msg)

    async def reply(self, msg: Message) -> str:
        return self._show("only you can see this", msg)

    async def dm(self, actor: Actor, msg: Message) -> str:
        return self._show(f"private message to {actor.name}", msg, max_lines=DM_PREVIEW_LINES)

    async def edit(self, ref: str, msg: Message) -> None:
        if msg.progress is None:
            self._show("(updated)", msg)
            return
        if self._progress is None:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
                TimeElapsedColumn(),
                console=self.console,
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(msg.title, total=1.0)
        assert self._task is not None
        self._progress.update(
            self._task, completed=msg.progress, description=msg.title + " " + msg.body
        )
        if msg.progress >= 1.0:
            self._stop_progress()

    def _stop_progress(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._task = None


class ConsoleChannels:
    """Implements the coach's ``Channels`` on a terminal: scheduled posts, board edits and
    DMs are printed like the Outbox's (for ``cruscible chat``-style local runs)."""

    def __init__(self, console: Console) -> None:
        self.box = ConsoleOutbox(console)

    async def post(
        self,
        community: Community,
        message: Message,
        *,
        channel_id: str | None = None,
        thread: str | None = None,
        ping: bool = False,
    ) -> str:
        self.box.channel = f"#{channel_id or community.channel_id or 'daily-challenge'}"
        return await self.box.post(message, thread=thread)

    async def edit(self, community: Community, ref: str, message: Message) -> None:
        await self.box.edit(ref, message)

    async def dm(self, community: Community | None, user_id: str, message: Message) -> str:
        return await self.box.dm(Actor("console", user_id, user_id), message)
