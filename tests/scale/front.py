"""A chat front end as a process of its own, for the crash tests: ``cruscible run``'s queue
(:class:`bot.core.jobs.EngineQueue` resumed: it follows its learners' grades, takes its
platform's ``settle`` and ``restarted`` jobs, rescues silent workers) over the PostgreSQL store
the ``CRUSCIBLE_*`` environment names, with the console platform's channels recorded in memory.

``python -m tests.scale.front USER URL`` submits ``URL`` for the ``rate-limiter`` challenge as
the console learner ``USER`` and waits for the grade, holding its progress message. Once the
store records this process as the message's holder it prints ``held <submission id> <holder>``
(one line, flushed) and goes on waiting; the test then kills it (SIGKILL). It ends by itself
after ``RUN_FOR_S`` at most.
"""

from __future__ import annotations

import asyncio
import sys

from sqlalchemy import select

from bot import logs
from bot.app import open_app
from bot.config import Settings
from bot.core.outbox import Actor
from bot.store import Submission
from tests.community.support import RecordingChannels
from tests.scale.conftest import RecordingOutbox

RUN_FOR_S = 90.0
HELD = "held"  # the line's first word once the progress message is held


async def main(user: str, url: str) -> None:
    settings = Settings()
    logs.setup(settings.log_level)
    async with asyncio.timeout(RUN_FOR_S), open_app(settings, reconcile=False) as app:
        app.coach.channels.register("console", RecordingChannels())
        await app.coach.queue.resume()
        submitted = asyncio.create_task(
            app.coach.submit(
                Actor("console", user, user.title()), "rate-limiter", url, RecordingOutbox()
            )
        )
        while True:
            async with app.store.session() as s:
                sub = await s.scalar(select(Submission).where(Submission.url == url))
            if sub is not None and sub.progress_holder is not None:
                print(HELD, sub.id, sub.progress_holder, flush=True)
                break
            if submitted.done():
                submitted.result()  # refused: the failure, raised
                raise SystemExit("the grade ended before its progress message was held")
            await asyncio.sleep(0.05)
        await submitted


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
