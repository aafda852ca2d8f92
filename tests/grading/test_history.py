"""History: recording, filters, JSON round trip, and cost at tens of thousands of ops."""

import json

import pytest

from grading.history import History


def _clock(times):
    it = iter(times)
    return lambda: next(it)


def test_invoke_complete_uses_clock_relative_to_origin():
    h = History(clock=_clock([100.0, 100.5, 100.75]))
    op = h.invoke("c1", "write", "k", "v1")
    assert op.invoked_s == 0.5 and not op.done and op.outcome == "unknown"
    h.complete(op, "ok", {"status": 201})
    assert op.completed_s == 0.75 and op.outcome == "ok" and op.result == {"status": 201}


def test_complete_rejects_bad_outcome_and_double_completion():
    h = History(clock=lambda: 0.0)
    op = h.invoke(1, "read", "k")
    with pytest.raises(ValueError):
        h.complete(op, "maybe")  # type: ignore[arg-type]
    h.complete(op, "failed")
    with pytest.raises(ValueError):
        h.complete(op, "ok")


def test_filters_and_grouping():
    h = History(clock=lambda: 0.0)
    a = h.complete(h.invoke(1, "write", "a", 1), "ok")
    b = h.complete(h.invoke(2, "write", "b", 1), "failed")
    r = h.complete(h.invoke(1, "read", "a"), "ok", {"value": 1})
    pending = h.invoke(3, "delete", "a")
    assert h.filter(key="a") == [a, r, pending]
    assert h.filter(kind="write") == [a, b]
    assert h.filter(kind=("write", "delete"), key="a") == [a, pending]
    assert h.filter(outcome="ok") == [a, r]
    assert h.by_key("write") == {"a": [a], "b": [b]}
    assert h.counts() == {"ok": 2, "failed": 1, "unknown": 1}
    assert len(h) == 4 and list(h)[0] is a


def test_json_round_trip(tmp_path):
    h = History(clock=lambda: 0.0)
    h.complete(h.invoke("p", "write", "k", {"url": "x"}, invoked_s=1.0), "ok", {"code": "k"}, 1.2)
    h.invoke("p", "read", "k", invoked_s=2.0)
    path = h.write_json(tmp_path / "history.json")
    rows = json.loads(path.read_text())
    assert rows[0]["outcome"] == "ok" and rows[1]["completed_s"] is None
    again = History.from_list(rows)
    assert again.to_list() == h.to_list()


def test_recording_fifty_thousand_ops():
    h = History()
    for i in range(50_000):
        h.complete(h.invoke(i % 64, "write", f"k{i % 1000}", i), "ok", {"i": i})
    assert len(h.filter(key="k7")) == 50 and len(h.ops) == 50_000
