"""``grading.answered``: a status and a JSON object holding given fields, a bool only as a bool."""

from __future__ import annotations

import grading
from grading.http import Exchange
from grading.load import Response


def exchange(status: int, body: bytes) -> Exchange:
    return Exchange("POST", "http://127.0.0.1:1/v1/check", {}, b"", status=status, body=body)


def test_answered_holds_a_status_and_fields() -> None:
    ok = exchange(200, b'{"allowed": true, "remaining": 19}')
    assert grading.answered(ok, 200)
    assert grading.answered(ok, 200, allowed=True, remaining=19)
    assert not grading.answered(ok, 429, allowed=True)
    assert not grading.answered(ok, 200, remaining=18)
    assert not grading.answered(ok, 200, retry_after_ms=1)  # a field it does not hold
    assert not grading.answered(exchange(200, b'{"allowed": 1}'), 200, allowed=True)
    assert not grading.answered(exchange(200, b"<html>"), 200)
    assert grading.answered(Response(429, b'{"allowed": false}'), 429, allowed=False)
