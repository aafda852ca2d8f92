"""The race helper's arithmetic: a trial's chance, the miss probability, bursting until sure."""

from __future__ import annotations

import math

import pytest

from grading import races
from grading.http import Exchange


def test_a_trial_exposes_a_race_with_the_spacing_of_uniform_arrivals() -> None:
    # 40 reads over 40 ms, a race 1 ms wide: the gap after the limit's read is S·Beta(1, 40)
    assert races.trial_hit_chance(40, 0.040, 0.001) == pytest.approx(1 - (1 - 1 / 40) ** 40)
    assert races.trial_hit_chance(1, 0.040, 0.001) == 0.0  # one request cannot race
    assert races.trial_hit_chance(10, 0.001, 0.001) == 1.0  # all within the window
    assert races.trial_hit_chance(10, 0.0, 0.001) == 1.0
    assert races.trial_hit_chance(10, 1.0, 0.0) == 0.0  # a race of no width is never seen
    wider = races.trial_hit_chance(10, 0.050, 0.005)
    assert races.trial_hit_chance(10, 0.050, 0.001) < wider  # a wider race is seen more often


def test_the_miss_probability_is_the_product_of_independent_misses() -> None:
    assert races.miss_probability(0, 0.5) == 1.0
    assert races.miss_probability(3, 0.5) == pytest.approx(0.125)
    assert races.miss_probability(10, 1.0) == 0.0
    assert races.miss_probability(25, 0.0) == 1.0
    with pytest.raises(ValueError):
        races.miss_probability(1, 1.5)
    # as many trials as trials_needed says bring it under the bound, one fewer does not
    n = races.trials_needed(0.3, 1e-3)
    assert n == math.ceil(math.log(1e-3) / math.log(0.7)) == 20
    assert races.miss_probability(n, 0.3) <= 1e-3 < races.miss_probability(n - 1, 0.3)
    assert races.trials_needed(1.0) == 1
    assert races.trials_needed(0.0) is None


def test_hit_chance_of_answer_times() -> None:
    times = [10.0 + i * 0.002 for i in range(20)]  # 20 answers over 38 ms
    assert races.hit_chance_of(times, 0.001) == pytest.approx(1 - (1 - 0.001 / 0.038) ** 20)
    assert races.hit_chance_of([], 0.001) == 0.0


def test_a_search_adds_trials_of_any_chance() -> None:
    found = races.RaceSearch(window_s=0.001)
    found.add([0.5, 0.5])
    found.add([0.9])
    assert (found.trials, found.bursts) == (3, 2)
    assert found.miss == pytest.approx(0.5 * 0.5 * 0.1)
    assert not found.confident
    assert "missed with probability 0.025" in found.sentence()
    assert "budget ended first" in found.sentence()
    found.add([0.99])
    assert found.confident and found.miss_metric == 0.00025
    assert "budget" not in found.sentence()


async def test_search_bursts_until_confident_and_no_longer() -> None:
    calls: list[int] = []

    async def burst(n: int) -> tuple[bool, list[float]]:
        calls.append(n)
        return False, [0.5] * 3  # each burst: a miss of 1/8

    found = await races.search(burst, window_s=0.001, bound=1e-3, max_bursts=10, budget_s=60)
    assert calls == [0, 1, 2, 3]  # (1/8)^4 = 2.4e-4 <= 1e-3 < (1/8)^3
    assert found.confident and not found.found and found.trials == 12


async def test_search_stops_at_a_race_seen_or_at_its_budget() -> None:
    async def racy(n: int) -> tuple[bool, list[float]]:
        return True, [0.01]

    found = await races.search(racy, window_s=0.001, max_bursts=10, budget_s=60)
    assert found.found and found.bursts == 1 and found.confident

    async def hopeless(n: int) -> tuple[bool, list[float]]:
        return False, [0.01]

    found = await races.search(hopeless, window_s=0.001, max_bursts=5, budget_s=60)
    assert found.bursts == 5 and not found.confident
    assert found.miss == pytest.approx(0.99**5)
    found = await races.search(hopeless, window_s=0.001, max_bursts=5, budget_s=0)
    assert found.bursts == 1  # at least one burst, whatever the budget

    async def unanswered(n: int) -> tuple[bool, list[float]]:
        return False, [0.0, 0.0]  # nothing to judge: the service answers errors

    found = await races.search(unanswered, window_s=0.001, max_bursts=5, budget_s=60)
    assert found.bursts == 1 and found.miss == 1.0 and not found.confident


class FakeGrade:
    """What :func:`grading.races.trials` uses of a grade: ``request``, here answered at once."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def request(self, method: str, path: str, **kwargs: object) -> Exchange:
        self.sent.append(path)
        status = 500 if path.endswith("broken") else 200
        return Exchange(method, f"http://127.0.0.1:1{path}", {}, b"", status=status)


async def test_trials_send_every_call_and_judge_each_item_on_its_contract_answers() -> None:
    g = FakeGrade()
    calls = {
        "a": [("POST", "/a", {})] * 5,
        "b": [("POST", "/b-broken", {})] * 3,
    }
    got, chances = await races.trials(g, calls, 0.001, lambda ex: ex.status == 200)  # type: ignore[arg-type]
    assert sorted(g.sent) == ["/a"] * 5 + ["/b-broken"] * 3
    assert [len(got["a"]), len(got["b"])] == [5, 3]
    # answered at once: within the window, certain; no contract answer: no trial at all
    assert chances == [1.0, 0.0]
