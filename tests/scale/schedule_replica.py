"""A bot replica for the schedule tests: ``cruscible run``'s operations (the real APScheduler,
the store's claims) over ``CRUSCIBLE_DATABASE_URL``, posting to a file instead of a platform.

``python -m tests.scale.schedule_replica OUT [--crash-on-post]`` appends one JSON line per post
to OUT (``{"pid", "community", "title", "at"}``) and a line per stage: ``loaded`` (the app is
open), then — after a ``go`` line on stdin, so that replicas start their operations together —
``ready`` once its operations started (the start-up catch-up made); then one more stdin line,
``<community id> <epoch seconds>``, makes its scheduler fire that community's daily job at that
instant (every replica is told the same one), and ``armed`` follows.
With ``--crash-on-post`` it starts its operations at once and kills itself (SIGKILL) inside its
first post: after it claimed the firing, before the platform took it. It runs until killed, at
most ``RUN_FOR_S``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from bot.app import open_app, operations
from bot.config import Settings
from bot.core.message import Message
from bot.store import Community
from tests.community.support import RecordingChannels

PLATFORM = "test"
RUN_FOR_S = 90.0


class FileChannels(RecordingChannels):
    """Posts recorded as JSON lines in a file every replica appends to (one write per line)."""

    def __init__(self, out: Path, *, crash: bool) -> None:
        super().__init__()
        self.out = out
        self.crash = crash

    def line(self, **fields: object) -> None:
        data = (json.dumps({"pid": os.getpid(), "at": time.time(), **fields}) + "\n").encode()
        fd = os.open(self.out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    async def post(
        self,
        community: Community,
        message: Message,
        *,
        channel_id: str | None = None,
        thread: str | None = None,
        ping: bool = False,
    ) -> str:
        if self.crash:
            os.kill(os.getpid(), signal.SIGKILL)
        ref = await super().post(
            community, message, channel_id=channel_id, thread=thread, ping=ping
        )
        self.line(community=community.id, title=message.title)
        return ref


async def main(out: Path, crash: bool) -> None:
    settings = Settings()  # CRUSCIBLE_DATABASE_URL, _DATA_DIR, _SCHEDULE_LEASE … from the test
    channels = FileChannels(out, crash=crash)
    async with open_app(settings, reconcile=False) as app:
        app.coach.channels.register(PLATFORM, channels)
        channels.line(event="loaded")
        if not crash:
            await asyncio.to_thread(sys.stdin.readline)  # go
        async with asyncio.timeout(RUN_FOR_S), operations(app) as ops:
            channels.line(event="ready")
            line = await asyncio.to_thread(sys.stdin.readline)
            community_id, at = line.split()
            when = datetime.fromtimestamp(float(at), UTC)
            ops.scheduler.modify_job(f"daily:{community_id}", next_run_time=when)
            channels.line(event="armed")
            await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), "--crash-on-post" in sys.argv[2:]))
