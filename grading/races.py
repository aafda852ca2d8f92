"""How likely a race check was to see a race of a stated size, and bursts until it is sure.

The model. A race ``window_s`` seconds wide is a read-then-write (check-then-act) whose read
and write are that far apart in the service: a request that reads within that time after
another read of the same item sees a stale value. A *trial* sends ``requests`` requests on one
fresh item at once (a burst may hold many trials, one per item). Their reads are modelled as
``requests`` independent arrival times, uniform over the ``spread_s`` seconds the service took
to answer them all (the spread of the answers stands in for the spread of the reads: a service
that serialises one item's requests, behind a lock, answers them further apart than it read
them, so there the estimate errs towards missing rather than towards certainty).

A race shows when one given pair of successive reads is closer than ``window_s``: for a limit,
the read that takes the item to its limit and the next one (both see room: one is admitted
over the limit); for a de-duplication, the first read and the second (both see nothing stored:
two are acted on). The spacing between two successive ones of ``m`` uniform points on
``[0, S]`` is ``S·Beta(1, m)``: it exceeds ``w`` with probability ``(1 - w/S)^m``. So one trial
exposes the race with chance ``1 - (1 - w/S)^m`` (:func:`trial_hit_chance`), and independent
trials all miss it with the product of their misses (:func:`miss_probability` for ``n`` equal
ones; :class:`RaceSearch` for any).

:func:`search` repeats a check's bursts — each on fresh items — until a race is seen, or the
probability of having missed one is at most its bound, or its count or time budget ends.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from grading.http import Exchange
    from grading.scenario import Grade

MISS_BOUND = 1e-3  # a race check is confident once it would miss its race at most this often

# A burst, given its index (0, 1, …; for fresh items): whether it saw a race, and the hit
# chance of each of its trials (:func:`trial_hit_chance`).
Burst = Callable[[int], Awaitable[tuple[bool, Sequence[float]]]]


def trial_hit_chance(requests: int, spread_s: float, window_s: float) -> float:
    """The chance (0..1) that one trial of ``requests`` concurrent requests on one item, read
    over ``spread_s`` seconds, exposes a race ``window_s`` seconds wide: ``1 - (1 - w/S)^m``
    (see the module). Fewer than two requests cannot race (0); a spread no wider than the
    window always does (1)."""
    if requests < 2 or window_s <= 0:
        return 0.0
    if spread_s <= window_s:
        return 1.0
    return 1.0 - (1.0 - window_s / spread_s) ** requests


def miss_probability(trials: int, hit_chance: float) -> float:
    """The probability (0..1) that ``trials`` independent trials, each exposing the race with
    ``hit_chance``, all miss it: ``(1 - hit_chance) ** trials``; 1 without a trial."""
    if not 0.0 <= hit_chance <= 1.0:
        raise ValueError(f"hit_chance must be within 0..1, not {hit_chance!r}")
    return (1.0 - hit_chance) ** max(0, trials)


def trials_needed(hit_chance: float, bound: float = MISS_BOUND) -> int | None:
    """How many trials of ``hit_chance`` bring the miss probability to ``bound`` or below;
    None when no number can (a chance of 0)."""
    if hit_chance >= 1.0:
        return 1
    if hit_chance <= 0.0:
        return None
    return max(1, math.ceil(math.log(bound) / math.log1p(-hit_chance)))


@dataclass
class RaceSearch:
    """What the bursts of one race check add up to: ``trials`` (independent, in ``bursts``),
    ``miss`` (the probability all of them missed a race ``window_s`` wide), ``found``
    (a race was seen) and ``elapsed_s``."""

    window_s: float
    bound: float = MISS_BOUND
    trials: int = 0
    bursts: int = 0
    miss: float = 1.0
    found: bool = False
    elapsed_s: float = 0.0

    def add(self, hit_chances: Sequence[float]) -> None:
        """One burst's trials, each with its chance of exposing the race."""
        self.bursts += 1
        self.trials += len(hit_chances)
        for p in hit_chances:
            self.miss *= 1.0 - min(1.0, max(0.0, p))

    @property
    def confident(self) -> bool:
        """A race was seen, or one of ``window_s`` would have been missed at most ``bound``."""
        return self.found or self.miss <= self.bound

    @property
    def miss_metric(self) -> float:
        """``miss`` to three significant digits, for the report's ``<check>.miss_probability``."""
        return float(f"{self.miss:.3g}")

    def sentence(self) -> str:
        """How likely a race of ``window_s`` was to be seen, in one clause."""
        width = f"{self.window_s * 1000:g} ms"
        chance = f"{self.miss:.2g}" if self.miss >= 1e-12 else "below 1e-12"
        said = (
            f"a race {width} wide would have been missed with probability {chance} "
            f"({self.trials} trial{'s' if self.trials != 1 else ''} in {self.bursts} "
            f"burst{'s' if self.bursts != 1 else ''}"
        )
        if self.confident:
            return said + ")"
        return said + f"; not below {self.bound:g}: the budget ended first)"


async def search(
    burst: Burst,
    *,
    window_s: float,
    bound: float = MISS_BOUND,
    max_bursts: int,
    budget_s: float,
) -> RaceSearch:
    """Run ``burst(0)``, ``burst(1)``, … until one sees a race, the miss probability is at
    most ``bound``, a burst had no trial that could show anything (no answers to judge: the
    service is failing, and more bursts would only load it), ``max_bursts`` ran, or
    ``budget_s`` seconds have passed (checked between bursts; at least one always runs).
    Returns what they add up to."""
    found = RaceSearch(window_s=window_s, bound=bound)
    t0 = time.monotonic()
    while True:
        seen, chances = await burst(found.bursts)
        found.add(chances)
        found.found = found.found or seen
        found.elapsed_s = time.monotonic() - t0
        hopeless = not any(chances)  # no trial got answers to judge: more of them will not
        if found.confident or hopeless or found.bursts >= max_bursts or found.elapsed_s >= budget_s:
            return found


def hit_chance_of(answered_at_s: Sequence[float], window_s: float) -> float:
    """:func:`trial_hit_chance` of one trial from its answers' times (``time.monotonic()``
    seconds, one per request that got an answer the contract allows)."""
    spread = max(answered_at_s) - min(answered_at_s) if answered_at_s else 0.0
    return trial_hit_chance(len(answered_at_s), spread, window_s)


async def trials(
    g: Grade,
    calls: Mapping[str, Sequence[tuple[str, str, dict[str, Any]]]],
    window_s: float,
    answered: Callable[[Exchange], bool],
) -> tuple[dict[str, list[Exchange]], list[float]]:
    """One burst of trials: every call of every item (``item -> its concurrent calls``) sent at
    once. Returns each item's exchanges, in its calls' order, and each item's trial hit chance
    (:func:`hit_chance_of` the times of the exchanges ``answered`` accepts: answers the
    contract allows, which alone show what the service decided)."""
    flat = [(item, call) for item, item_calls in calls.items() for call in item_calls]

    async def one(method: str, path: str, kwargs: dict[str, Any]) -> tuple[Exchange, float]:
        ex = await g.request(method, path, **kwargs)
        return ex, time.monotonic()

    timed = await asyncio.gather(*(one(*call) for _, call in flat))
    got: dict[str, list[Exchange]] = {item: [] for item in calls}
    times: dict[str, list[float]] = {item: [] for item in calls}
    for (item, _), (ex, at) in zip(flat, timed, strict=True):
        got[item].append(ex)
        if answered(ex):
            times[item].append(at)
    return got, [hit_chance_of(times[item], window_s) for item in calls]
