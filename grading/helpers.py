"""Small helpers every challenge's ``scenario.py`` may use, re-exported from :mod:`grading`.

They import nothing heavy (no HTTP client, no numpy), so ``grading`` stays light to import
for the catalog.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from grading.http import Exchange
    from grading.load import Response

T = TypeVar("T")
# The header of a load run's request with a JSON body (``Request(..., headers=JSON_HEADERS)``).
JSON_HEADERS = (("Content-Type", "application/json"),)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q``-th percentile (0 < q <= 100) of ``values``, in their unit;
    None when there are none. The smallest value with at least ``q`` % of the values at or
    below it (no interpolation): ``percentile([1, 2, 3, 4], 50) == 2`` (the nearest-rank
    method, https://en.wikipedia.org/wiki/Percentile#The_nearest-rank_method)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def json_body(answer: Exchange | Response | bytes) -> Any:
    """The JSON value of ``answer`` (an exchange, a load run's response, or a body's bytes),
    or None when its body is not JSON (or the exchange got no answer)."""
    if isinstance(answer, bytes | bytearray):
        body = bytes(answer)
    elif hasattr(answer, "json"):
        try:
            return answer.json()
        except ValueError:
            return None
    else:
        body = answer.body
    try:
        return json.loads(body)
    except ValueError:  # UnicodeDecodeError included
        return None


def json_object(answer: Exchange | Response | bytes) -> dict[str, Any] | None:
    """The JSON object of ``answer`` (as :func:`json_body`), or None when it is not one."""
    data = json_body(answer)
    return data if isinstance(data, dict) else None


def answered(answer: Exchange | Response, status: int, **fields: Any) -> bool:
    """``answer`` has ``status`` and a JSON object body holding ``fields`` (each equal; a bool
    only as a bool: ``"allowed": 1`` is not ``allowed=True``)."""
    data = json_object(answer)
    return (
        answer.status == status
        and data is not None
        and all(
            name in data and data[name] == v and isinstance(data[name], bool) == isinstance(v, bool)
            for name, v in fields.items()
        )
    )


async def poll_until(
    probe: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    *,
    limit_s: float,
    every_s: float,
) -> tuple[T, float | None]:
    """Await ``probe()`` until ``done`` holds for its result, ``every_s`` seconds apart.

    Returns the last result and the seconds from the first probe until ``done`` held, or
    None for the seconds when it still did not hold once ``limit_s`` seconds had passed (the
    probe always runs at least once, and once more after the last wait). Bounded: at most
    about ``limit_s / every_s + 2`` probes.
    """
    t0 = time.monotonic()
    while True:
        result = await probe()
        if done(result):
            return result, time.monotonic() - t0
        if time.monotonic() - t0 >= limit_s:
            return result, None
        await asyncio.sleep(every_s)


def with_retries(
    rng: random.Random,
    new: Callable[[], T],
    *,
    rate: float,
    duration_s: float,
    share: float,
    gap_s: tuple[float, float],
) -> list[T]:
    """The items a load sends at ``rate`` per second for ``duration_s``, in order: each a fresh
    ``new()`` or, with probability ``share``, an item sent ``gap_s[0]`` to ``gap_s[1]``
    seconds earlier sent again (a client retrying after its timeout). Seeded by ``rng``;
    ``new`` may draw from it too."""
    plan: list[T] = []
    lo, hi = (max(1, round(gap * rate)) for gap in gap_s)
    for i in range(math.ceil(rate * duration_s)):
        retry = i >= lo and rng.random() < share
        plan.append(plan[i - rng.randint(lo, min(i, hi))] if retry else new())
    return plan
