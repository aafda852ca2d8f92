"""The helpers ``grading`` offers challenge authors, and the recovery limit challenge.yaml sets."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

import grading
from challenges.catalog import ROOT, Challenge, ChallengeError
from grading.http import Exchange
from grading.load import Response


def test_percentile_is_nearest_rank() -> None:
    assert grading.percentile([], 50) is None
    assert grading.percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.0
    assert grading.percentile([4.0, 1.0, 3.0, 2.0], 75) == 3.0
    assert grading.percentile([4.0, 1.0, 3.0, 2.0], 100) == 4.0
    assert grading.percentile([7.0], 1) == 7.0
    values = [float(i) for i in range(1, 21)]  # 20 values: p95 is the 19th
    assert grading.percentile(values, 95) == 19.0


def exchange(body: bytes, status: int | None = 200, error: str | None = None) -> Exchange:
    return Exchange("GET", "http://127.0.0.1:1/x", {}, b"", status=status, body=body, error=error)


def test_json_helpers_answer_none_for_what_is_not_json() -> None:
    assert grading.json_body(exchange(b'{"a": 1}')) == {"a": 1}
    assert grading.json_body(exchange(b"[1, 2]")) == [1, 2]
    assert grading.json_body(exchange(b"<html>")) is None
    assert grading.json_body(exchange(b"", status=None, error="refused")) is None
    assert grading.json_object(exchange(b'{"a": 1}')) == {"a": 1}
    assert grading.json_object(exchange(b"[1, 2]")) is None
    assert grading.json_object(exchange(b"nope")) is None


def test_json_helpers_read_load_responses_and_raw_bodies_alike() -> None:
    assert grading.json_object(Response(200, b'{"allowed": true}')) == {"allowed": True}
    assert grading.json_body(Response(502, b"Bad Gateway")) is None
    assert grading.json_object(b'{"id": "u1"}') == {"id": "u1"}
    assert grading.json_body(b"\xff\xfe") is None  # not UTF-8: not JSON either
    assert grading.JSON_HEADERS == (("Content-Type", "application/json"),)


async def test_poll_until_returns_the_answer_and_the_time_it_took() -> None:
    answers = iter(range(100))
    calls = []

    async def probe() -> int:
        calls.append(1)
        return next(answers)

    value, took = await grading.poll_until(probe, lambda n: n >= 3, limit_s=5.0, every_s=0.01)
    assert value == 3 and len(calls) == 4
    assert took is not None and took >= 0.03


async def test_poll_until_gives_up_after_its_limit_with_the_last_answer() -> None:
    calls = []

    async def probe() -> str:
        calls.append(1)
        return f"answer {len(calls)}"

    value, took = await grading.poll_until(probe, lambda _: False, limit_s=0.1, every_s=0.02)
    assert took is None
    assert value == f"answer {len(calls)}"
    assert 2 <= len(calls) <= 0.1 / 0.02 + 2  # bounded by the limit


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    dest = tmp_path / "rate-limiter"
    shutil.copytree(ROOT / "rate-limiter", dest, ignore=shutil.ignore_patterns("solutions"))
    return dest


def set_recovery(folder: Path, value: object) -> None:
    path = folder / "challenge.yaml"
    data = yaml.safe_load(path.read_text())
    data["grading"]["recovery_s"] = value
    path.write_text(yaml.safe_dump(data))


def test_the_recovery_limit_defaults_to_five_seconds_and_challenge_yaml_sets_it(
    copy: Path,
) -> None:
    assert grading.RECOVERY_S == 5.0
    assert Challenge.load(copy).grade_config().recovery_s == 5.0
    set_recovery(copy, 2.5)
    assert Challenge.load(copy).grade_config().recovery_s == 2.5


def test_a_recovery_limit_out_of_range_is_refused_with_file_and_field(copy: Path) -> None:
    set_recovery(copy, 0)
    with pytest.raises(
        ChallengeError, match=r"challenge.yaml: grading.recovery_s: .*greater than 0"
    ):
        Challenge.load(copy)
