"""A grading worker process for the scale tests and benchmark: ``cruscible worker``'s own code
(:meth:`bot.core.jobs.EngineQueue.work`) with a short grade of real traffic in place of a
challenge's scenario, so that the engine, not a 30 s grade, is what a test waits on.

The submitted URL says how long the grade lasts: ``http://127.0.0.1:PORT/<seconds>/<tag>``.
The grade sends ``GET <url>/probe`` every ``PROBE_EVERY_S`` with the header ``X-Worker: <pid>``
until then (the fixture service counts them: who graded, and whether a cancelled grade stopped),
saying its progress as the ``load`` phase, then reports a score of 80. Settings come from the ``CRUSCIBLE_*`` environment, as a worker's.

Run: ``python -m tests.scale.node [--concurrency N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from bot import logs
from bot.app import open_app
from bot.config import Settings
from bot.core.grader import Graded
from bot.core.jobs import EngineQueue
from grading.report import Report

PROBE_EVERY_S = 0.05


def probe_seconds(url: str) -> float:
    """The grade's length the URL names (its first path segment)."""
    return float(urlsplit(url).path.strip("/").split("/")[0])


class ProbeGrader:
    """Grades by probing the URL for as long as it names (see the module)."""

    policy = None  # no hosted code

    async def grade(
        self,
        challenge: Any,
        url: str,
        out_dir: Path,
        *,
        seed: int,
        env: Any = None,
        progress: Any = None,
        scale: Any = None,
    ) -> Graded:
        loop = asyncio.get_running_loop()
        length = probe_seconds(url)
        until = loop.time() + length
        headers = {"X-Worker": str(os.getpid())}
        async with aiohttp.ClientSession() as http:
            while loop.time() < until:
                if progress is not None:
                    progress("load", 1.0 - (until - loop.time()) / length)
                async with http.get(f"{url}/probe", headers=headers) as resp:
                    await resp.read()
                await asyncio.sleep(PROBE_EVERY_S)
        report = Report(
            challenge=challenge.id,
            target=url,
            environment=None,
            seed=seed,
            score=80,
            passed=True,
            discussion="What the design paid for its choice.",
        )
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "report.json"
        path.write_text(report.to_json())
        return Graded(report, out_dir, [path])


async def main(concurrency: int) -> None:
    settings = Settings()
    logs.setup(settings.log_level)
    async with open_app(settings, reconcile=False) as app:
        app.coach.grader = ProbeGrader()  # type: ignore[assignment]
        assert isinstance(app.coach.queue, EngineQueue)
        await app.coach.queue.work(concurrency=concurrency)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--concurrency", type=int, default=1)
    asyncio.run(main(parser.parse_args().concurrency))
