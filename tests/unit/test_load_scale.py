"""The load rate of a grade: the ladder that measures a host, the policy that picks the rate
from the measurement, the schema's floor/stated rule and the report's ``scale``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bot.core.calibration import (
    Calibration,
    CalibrationStore,
    Trial,
    fingerprint,
    judge,
    ladder,
)
from bot.core.scale import LoadScales
from challenges.catalog import Challenge, ChallengeError
from grading.report import LoadScale, Report

EXAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "challenges" / "counter"


@pytest.fixture
def counter(tmp_path: Path) -> Challenge:
    folder = tmp_path / "challenges" / "counter"
    shutil.copytree(EXAMPLE, folder)
    return Challenge.load(folder)


def sustaining_up_to(limit: float, tried: list[float]):  # type: ignore[no-untyped-def]
    async def sustains(rate: float) -> Trial:
        tried.append(rate)
        return Trial(rate, rate <= limit, "" if rate <= limit else "load.latency fail: p99")

    return sustains


async def test_the_stated_rate_sustained_is_one_trial() -> None:
    tried: list[float] = []
    assert await ladder(400, 2000, sustaining_up_to(5000, tried)) == (2000, [Trial(2000, True)])
    assert tried == [2000]


async def test_below_the_stated_rate_the_ladder_bisects_geometrically() -> None:
    tried: list[float] = []
    rate, trials = await ladder(400, 2000, sustaining_up_to(1000, tried), steps=3)
    # 2000 ✗, √(400·2000)=894 ✓, √(894·2000)=1337 ✗, √(894·1337)=1093 ✗
    assert tried == [2000, 894, 1337, 1093]
    assert rate == 894
    assert [t.sustained for t in trials] == [False, True, False, False]
    assert trials[0].why.startswith("load.latency")


async def test_nothing_sustained_above_the_floor_leaves_the_floor() -> None:
    tried: list[float] = []
    assert (await ladder(100, 1000, sustaining_up_to(50, tried), steps=2))[0] == 100
    assert tried == [1000, 316, 178]


async def test_a_challenge_graded_at_its_stated_scale_is_not_measured() -> None:
    tried: list[float] = []
    assert await ladder(20, 20, sustaining_up_to(0, tried)) == (20, [])
    assert tried == []


def measured(challenge: Challenge, sustained: float, trials: list[Trial]) -> Calibration:
    return Calibration(
        challenge=challenge.id,
        host="worker-1",
        cpus=2,
        fingerprint=fingerprint(challenge, "local"),
        reference="redis_incr",
        floor_rate=100,
        stated_rate=1000,
        sustained_rate=sustained,
        measured_at="2026-11-30T20:00:00+00:00",
        trials=trials,
    )


def test_the_policy_picks_the_rate_and_says_why(counter: Challenge, tmp_path: Path) -> None:
    store = CalibrationStore(tmp_path / "data", host="worker-1")
    scales = LoadScales("measured", store)
    unmeasured = scales.for_challenge(counter)
    assert (unmeasured.rate, unmeasured.stated_rate, unmeasured.basis) == (100, 1000, "unmeasured")
    assert unmeasured.note == (
        "graded at 100 requests/s, below the stated 1,000/s: this worker has not measured "
        "what it sustains (`cruscible challenges calibrate`)"
    )

    store.put(measured(counter, 316, [Trial(1000, False, "load.latency fail"), Trial(316, True)]))
    below = scales.for_challenge(counter)
    assert (below.rate, below.basis) == (316, "measured")
    assert "the highest rate this worker (worker-1, 2 CPUs) sustained" in below.note
    assert "reference design redis_incr, measured 2026-11-30" in below.note

    store.put(measured(counter, 100, [Trial(1000, False, "load.latency fail")]))
    assert "sustained none of the rates it tried above its floor" in (
        scales.for_challenge(counter).note
    )

    store.put(measured(counter, 1000, [Trial(1000, True)]))
    assert scales.for_challenge(counter) == LoadScale(1000, 1000, "measured")

    assert LoadScales("stated", store).for_challenge(counter) == LoadScale(1000, 1000, "stated")
    fixed = LoadScales("floor", store).for_challenge(counter)
    assert (fixed.rate, fixed.basis) == (100, "floor")
    assert "CRUSCIBLE_GRADE_RATE=floor" in fixed.note


def test_a_measurement_is_for_one_host_and_one_version(counter: Challenge, tmp_path: Path) -> None:
    data = tmp_path / "data"
    CalibrationStore(data, host="worker-1").put(measured(counter, 1000, [Trial(1000, True)]))
    assert CalibrationStore(data, host="worker-1").get(counter) is not None
    assert CalibrationStore(data, host="worker-2").get(counter) is None  # another host
    yaml = counter.path / "challenge.yaml"
    yaml.write_text(yaml.read_text().replace("duration_s: 3", "duration_s: 4"))
    changed = Challenge.load(counter.path)
    assert CalibrationStore(data, host="worker-1").get(changed) is None  # the load changed
    path = CalibrationStore(data, host="worker-1").path("counter")
    path.write_text("{not json")
    assert CalibrationStore(data, host="worker-1").get(counter) is None  # unreadable: ignored


def test_a_floor_above_the_stated_scale_is_refused(counter: Challenge) -> None:
    yaml = counter.path / "challenge.yaml"
    yaml.write_text(yaml.read_text().replace("  rate: 100\n", "  rate: 2000\n"))
    with pytest.raises(ChallengeError, match="set grading.stated_rate") as caught:
        Challenge.load(counter.path)
    assert "challenge.yaml" in str(caught.value)


def test_at_rate_reaches_the_scenario_config_and_discussion(counter: Challenge) -> None:
    faster = counter.at_rate(316)
    assert faster.scenario().spec.grading.rate == 316
    assert counter.spec.grading.rate == 100  # the catalog's own is untouched
    scale = LoadScale(316, 1000, "measured", "why")
    assert faster.grade_config(scale).scale == scale
    assert counter.at_rate(100) is counter


def test_the_report_carries_the_scale_and_reads_old_reports() -> None:
    report = Report("counter", "http://127.0.0.1:1", None, 1, scale=LoadScale(316, 1000, "m", "n"))
    assert report.to_dict()["scale"] == {
        "rate": 316,
        "stated_rate": 1000,
        "basis": "m",
        "note": "n",
    }
    assert Report.from_dict(report.to_dict()).scale == report.scale
    old = report.to_dict()
    del old["scale"]  # a report written before the field
    assert Report.from_dict(old).scale == LoadScale()


def test_grades_running_at_once_share_what_was_measured(counter: Challenge, tmp_path: Path) -> None:
    store = CalibrationStore(tmp_path / "data", host="worker-1")
    store.put(measured(counter, 900, [Trial(1000, False, "load.latency fail"), Trial(900, True)]))
    shared = LoadScales("measured", store, slots=2).for_challenge(counter)
    assert shared.rate == 450
    assert "(900/s alone, shared by the 2 grades it runs at once)" in shared.note
    # never below the floor, however many share it
    assert LoadScales("measured", store, slots=20).for_challenge(counter).rate == 100


def test_a_rate_where_the_reference_design_fails_is_not_sustained() -> None:
    from grading.report import Check, Status

    def report(passed: bool, load: Status) -> Report:
        checks = [
            Check("load.latency", "p99", load, 1, 1, "p99 = 3 ms"),
            Check("verify.kept", "kept", Status.PASS if passed else Status.FAIL, 1, 1, "lost 3"),
        ]
        return Report("counter", "u", None, 1, passed=passed, checks=checks)

    assert judge(report(True, Status.PASS), 500) == Trial(500, True)
    lost = judge(report(False, Status.PASS), 500)
    assert (
        not lost.sustained and lost.why == "the reference design failed: verify.kept fail: lost 3"
    )
    late = judge(report(True, Status.WARN), 500)
    assert not late.sustained and late.why.startswith("load.latency warn")
