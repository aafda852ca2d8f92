"""k6-style thresholds: parsing, and judging whole runs against sliding windows."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace

import pytest

from grading.config import GradeConfig
from grading.load import LoadPlan, LoadResult, Request, run_load_sync
from grading.report import Report, Status
from grading.scenario import Grade
from grading.thresholds import Threshold, judge
from tests.grading.servers import app_process


@pytest.mark.parametrize(
    ("text", "metric", "op", "limit"),
    [
        ("p99 < 10ms", "p99", "<", 10.0),
        ("p95<=50ms", "p95", "<=", 50.0),
        ("p99.9 < 1s", "p99.9", "<", 1000.0),
        ("p(99) < 250", "p99", "<", 250.0),
        ("P90 < 500us", "p90", "<", 0.5),
        ("max < 2s", "max", "<", 2000.0),
        ("med < 3 ms", "p50", "<", 3.0),
        ("avg < 0.5s", "mean", "<", 500.0),
        ("errors < 1%", "errors", "<", 0.01),
        ("error rate <= 0.5%", "errors", "<=", 0.005),
        ("errors < 0.02", "errors", "<", 0.02),
        ("rate >= 1900/s", "rate", ">=", 1900.0),
        ("rate > 100 rps", "rate", ">", 100.0),
        ("rate >= 1,900/s", "rate", ">=", 1900.0),
    ],
)
def test_parse(text: str, metric: str, op: str, limit: float) -> None:
    t = Threshold.parse(text)
    assert (t.metric, t.op, t.limit, t.text) == (metric, op, pytest.approx(limit), text)
    assert Threshold.parse(str(t)) == Threshold(t.metric, t.op, t.limit, str(t))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "cannot read"),
        ("p99", "cannot read"),
        ("p99 = 10ms", "cannot read"),
        ("p99 < ten ms", "cannot read"),
        ("p99 < 10 parsecs", "latency limit"),
        ("p0 < 10ms", "percentile"),
        ("p101 < 10ms", "percentile"),
        ("latency < 10ms", "unknown metric"),
        ("errors < 5", "percentage"),
        ("errors < 5ms", "percentage"),
        ("rate >= 10ms", "requests per second"),
        ("p99 < 10ms; drop table", "cannot read"),
    ],
)
def test_parse_rejects_bad_syntax(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Threshold.parse(text)


@pytest.fixture(scope="module")
def app_url() -> Iterator[str]:
    with app_process() as url:
        yield url


@pytest.fixture(scope="module")
def stalled(app_url: str) -> LoadResult:
    """1000 req/s for 3 s with every request paused 500 ms about 1.0 s in."""
    at = time.monotonic() + 1.0
    req = urllib.request.Request(f"{app_url}/_control/stall?at={at}&ms=500", method="POST")
    urllib.request.urlopen(req, timeout=5).close()
    request = Request("GET", "/work")
    return run_load_sync(
        app_url, LoadPlan(rate=1000, duration_s=3, make_request=lambda _i: request, connections=8)
    )


@pytest.fixture(scope="module")
def failing(app_url: str) -> LoadResult:
    """400 req/s for 2 s; requests scheduled from 1.0 s to 1.25 s get a 500."""
    ok, bad = Request("GET", "/fast"), Request("GET", "/status/500")
    plan = LoadPlan(rate=400, duration_s=2, make_request=lambda i: bad if 400 <= i < 500 else ok)
    return run_load_sync(app_url, plan)


def test_stall_breaches_a_window_while_the_whole_run_passes(stalled: LoadResult) -> None:
    verdict = judge(Threshold.parse("p50 < 50ms"), stalled, window_s=0.5)
    assert verdict.whole_value is not None and verdict.whole_value < 50
    assert not verdict.ok
    assert verdict.worst_window_value is not None and verdict.worst_window_value > 100
    assert verdict.worst_window_start_s is not None and 0.5 <= verdict.worst_window_start_s <= 1.5
    assert verdict.first_breach_s is not None and 0.75 <= verdict.first_breach_s <= 1.25
    assert verdict.description.startswith("p50 = ")
    assert "(limit < 50 ms); worst 0.5 s window" in verdict.description
    assert "first breach at" in verdict.description


def test_whole_run_breach_and_passing_thresholds(stalled: LoadResult) -> None:
    p99 = judge(Threshold.parse("p99 < 50ms"), stalled)
    assert not p99.ok and p99.whole_value is not None and p99.whole_value > 300
    assert p99.whole_value == pytest.approx(stalled.percentile_ms(99), rel=0.01)
    assert judge(Threshold.parse("max < 2s"), stalled).ok
    errors = judge(Threshold.parse("errors < 1%"), stalled)
    assert errors.ok and errors.whole_value == 0 and errors.first_breach_s is None
    assert errors.description == "errors = 0.00% (limit < 1.00%)"  # the run is shorter than 5 s


def test_error_window_and_first_breach(failing: LoadResult) -> None:
    assert failing.errors == {"http_5xx": 100}
    verdict = judge(Threshold.parse("errors < 20%"), failing, window_s=0.5)
    assert verdict.whole_value == pytest.approx(0.125)
    assert not verdict.ok
    assert verdict.worst_window_value == pytest.approx(0.5)
    assert verdict.worst_window_start_s == 0.75  # the first of the windows holding all 100
    assert verdict.first_breach_s == 1.0
    # a 5 s window is longer than the run: the whole run is the only window
    assert judge(Threshold.parse("errors < 20%"), failing).ok


def test_rate_threshold_by_window(failing: LoadResult) -> None:
    verdict = judge(Threshold.parse("rate >= 300/s"), failing, window_s=0.5)
    assert verdict.whole_value == pytest.approx(350)
    assert verdict.worst_window_value == pytest.approx(200)
    assert verdict.first_breach_s == 1.0 and not verdict.ok
    assert judge(Threshold.parse("rate >= 150/s"), failing, window_s=0.5).ok


def _grade(report: Report) -> Grade:
    """A grade that only records checks (it sends nothing)."""
    return Grade(
        config=GradeConfig("example", weights={"load.x": 10}),
        target=None,  # type: ignore[arg-type]  # judge sends nothing
        http=None,  # type: ignore[arg-type]
        report=report,
        env=None,
        injector=None,
        progress=None,
    )


def _judged(result: LoadResult, threshold: str) -> Status:
    """What ``Grade.judge`` records for ``threshold`` over ``result``."""
    report = Report("example", "http://127.0.0.1:1", None, 1)
    _grade(report).judge("load.x", "x", threshold, result)
    return report.checks[-1].status


def test_a_lagging_generator_qualifies_latency_but_never_excuses_errors(
    stalled: LoadResult, failing: LoadResult
) -> None:
    lagging = replace(failing, unreliable=True, unreliable_reason="the generator lagged 40 ms")
    assert _judged(failing, "errors < 5%") == Status.FAIL
    assert _judged(lagging, "errors < 5%") == Status.FAIL  # 12.5 % failed, whoever was slow
    slow = replace(stalled, unreliable=True, unreliable_reason="the generator lagged 40 ms")
    assert _judged(stalled, "p99 < 50ms") == Status.FAIL
    assert _judged(slow, "p99 < 50ms") == Status.WARN  # the latency figure is not reliable


def test_a_failing_check_always_says_why_in_one_line() -> None:
    report = Report("example", "http://127.0.0.1:1", None, 1)
    grade = _grade(report)
    check = grade.check("c.one", "Answers 201", False, expected=201, actual=500)
    assert check.detail == "expected 201, got 500"
    assert grade.check("c.two", "Rejects bad keys", False).detail == "Rejects bad keys"
    assert grade.check("c.three", "Fine", True).detail == ""
