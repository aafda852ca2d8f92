"""Checkers against hand-made histories: known anomalies found, clean histories pass."""

from grading.checkers import (
    acknowledged_lost,
    burst_over_admission,
    counter_exactness,
    duplicates,
    over_admission,
    phantom_writes,
    stale_reads,
    starvation,
)
from grading.history import History


def _h():
    return History(clock=lambda: 0.0)


def _op(h, kind, key, value=None, *, at, done, outcome="ok", result=None, process=0):
    op = h.invoke(process, kind, key, value, invoked_s=at)
    if done is not None:
        h.complete(op, outcome, result, completed_s=done)
    return op


# --- acknowledged_lost ---------------------------------------------------------------


def test_acknowledged_lost_finds_missing_ok_writes_only():
    h = _h()
    lost = _op(h, "write", "a", at=0, done=0.1)
    _op(h, "write", "b", at=0, done=0.1)
    _op(h, "write", "c", at=0, done=0.1, outcome="failed")  # never happened: not lost
    _op(h, "write", "d", at=0, done=1.0, outcome="unknown")  # may not have happened
    _op(h, "write", "e", at=0, done=None)  # no answer at all
    r = acknowledged_lost(h, {"b", "d"})
    assert r.valid is False
    assert r.counts["lost"] == 1 and r.counts["acknowledged"] == 2
    assert r.counts["unknown_but_stored"] == 1
    assert r.anomalies[0]["ops"][0]["index"] == lost.index
    assert "'a'" in r.anomalies[0]["message"]


def test_acknowledged_lost_clean_and_deleted_keys_allowed():
    h = _h()
    _op(h, "write", "a", at=0, done=0.1)
    _op(h, "write", "b", at=0, done=0.1)
    _op(h, "delete", "b", at=0.2, done=0.3)
    r = acknowledged_lost(h, ["a"])
    assert r.valid is True and r.anomalies == [] and r.counts["lost"] == 0


def test_deadline_zero_gives_unknown_with_reason():
    h = _h()
    _op(h, "write", "a", at=0, done=0.1)
    r = acknowledged_lost(h, {"a"}, deadline_s=0)
    assert r.valid == "unknown" and "budget" in r.reason


# --- duplicates ----------------------------------------------------------------------


def test_duplicates_counts_each_repeated_key():
    r = duplicates(iter(["e1", "e2", "e1", "e3", "e1", "e2"]))
    assert r.valid is False
    assert r.counts == {
        "anomalies": 2,
        "deliveries": 6,
        "distinct": 3,
        "extra": 3,
        "duplicated": {"e1": 3, "e2": 2},
    }
    assert r.anomalies[0]["message"] == "'e1' was delivered 3 times"


def test_duplicates_clean():
    r = duplicates(["a", "b", "c"])
    assert r.valid is True and r.counts["extra"] == 0 and r.anomalies == []


# --- phantom_writes ------------------------------------------------------------------


def test_phantom_writes_flags_items_never_asked_for():
    h = _h()
    _op(h, "write", "a", at=0, done=0.1)
    _op(h, "write", "b", at=0, done=None)  # unknown, stored: fine
    r = phantom_writes(h, ["a", "b", "zzz"])
    assert r.valid is False and r.counts["phantoms"] == 1
    assert r.anomalies[0]["key"] == "zzz"


def test_phantom_writes_clean():
    h = _h()
    _op(h, "write", "a", at=0, done=0.1)
    assert phantom_writes(h, ["a"]).valid is True


# --- over_admission ------------------------------------------------------------------


def _check(h, key, at, done, allowed=True, outcome="ok"):
    return _op(h, "check", key, at=at, done=done, outcome=outcome, result={"allowed": allowed})


def test_over_admission_sliding_window_across_a_fixed_window_boundary():
    h = _h()
    # limit 3 per 10 s; a fixed-window limiter admits 3 at 9.x and 3 more at 10.x
    for t in (9.0, 9.5, 9.9, 10.1, 10.2, 10.3):
        _check(h, "k", t, t + 0.01)
    _check(h, "k", 10.4, 10.41, allowed=False)
    _check(h, "k", 10.5, 10.51, outcome="unknown")
    for t in (0.0, 5.0, 11.0):  # another key, well spread
        _check(h, "q", t, t + 0.01)
    r = over_admission(h, 3, 10.0)
    assert r.valid is False
    assert r.counts["max_in_window"] == {"k": 6, "q": 2}
    assert r.counts["boundary_burst"] == 6 and r.counts["excess"] == 3
    assert r.counts["admitted"] == 9
    a = r.anomalies[0]
    assert a["key"] == "k" and a["max_in_window"] == 6 and a["window_start_s"] == 9.0
    assert len(a["ops"]) == 6


def test_over_admission_only_counts_ops_certainly_inside_the_window():
    h = _h()
    # 3 admitted at start; a 4th invoked inside the window but answered after it: not certain
    for t in (0.0, 1.0, 2.0):
        _check(h, "k", t, t + 0.01)
    _check(h, "k", 9.0, 12.5)  # admitted somewhere in [9, 12.5]: maybe after 10 s
    _check(h, "k", 10.0, 10.01)  # [0, 10) is half-open: outside; [1, 11) holds 3
    r = over_admission(h, 3, 10.0)
    assert r.valid is True and r.counts["max_in_window"] == {"k": 3}
    assert r.counts["excess"] == 0


def test_over_admission_with_429_recorded_as_failed():
    h = _h()
    for i in range(5):  # a limiter that answered 200 five times (limit 3), then 429s
        op = h.invoke(0, "check", "probe:0", invoked_s=float(i))
        h.complete(op, "ok", None, float(i) + 0.01)
    for i in range(5, 8):
        h.complete(h.invoke(0, "check", "probe:0", invoked_s=float(i)), "failed", {}, i + 0.01)
    h.complete(h.invoke(0, "check", "probe:0", invoked_s=4.0), "ok", None, 4.01)  # same times
    r = over_admission(h, limit=3, window_s=10.0)
    assert r.valid is False and r.counts["max_in_window"] == {"probe:0": 6}


def _asking(h, key, every, until, admit):
    """A client asking every ``every`` s until ``until``; ``admit(t)`` says what it got."""
    t = 0.0
    while t < until:
        ok = admit(t)
        _check(h, key, t, t + 0.01, allowed=ok, outcome="ok" if ok else "failed")
        t = round(t + every, 6)


def test_starvation_passes_every_sound_algorithm():
    h = _h()
    # limit 3 per 10 s, a client asking every 0.5 s for 25 s
    _asking(h, "fixed", 0.5, 25, lambda t: t % 10 < 1.5)  # 3 at the start of each window
    _asking(h, "bucket", 0.5, 25, lambda t: t < 1.5 or t % 3.5 < 0.5)  # a token now and then
    r = starvation(h, 10.0)
    assert r.valid is True, r.anomalies
    assert 8.0 <= r.counts["longest_lockout_s"] <= 8.5


def test_starvation_catches_a_limiter_that_rearms_on_every_request():
    h = _h()
    _asking(h, "k", 0.5, 25, lambda t: t < 1.5)  # admitted 3 times, then never again
    _asking(h, "short", 0.5, 5, lambda t: t < 1.5)  # refused, but the history ends within a window
    r = starvation(h, 10.0)
    assert r.valid is False and r.counts["starved_keys"] == 1
    assert r.anomalies[0]["key"] == "k" and r.anomalies[0]["lockout_s"] > 20
    assert "still refused" in r.anomalies[0]["message"]


def test_burst_over_admission():
    total, per_key = burst_over_admission(
        {"a": [True] * 22 + [False] * 8, "b": [True] * 20 + [False] * 10, "c": [True] * 3}, 20
    )
    assert total == 2 and per_key == {"a": 2, "b": 0, "c": 0}


# --- counter_exactness ---------------------------------------------------------------


def test_counter_exactness_reports_miscounts():
    r = counter_exactness({"a": 10, "b": 5, "c": 1}, {"a": 10, "b": 7, "d": 2})
    assert r.valid is False
    assert r.counts["errors"] == {"b": 2, "c": -1, "d": 2}
    assert r.counts["miscounted"] == 3 and r.counts["total_abs_error"] == 5
    assert r.counts["over"] == 2 and r.counts["under"] == 1
    assert {"key": "c", "expected": 1, "actual": 0}.items() <= r.anomalies[1].items()


def test_counter_exactness_clean():
    r = counter_exactness({"a": 3}, {"a": 3})
    assert r.valid is True and r.counts["total_abs_error"] == 0


# --- stale_reads ---------------------------------------------------------------------


def _read(h, key, value, at, done):
    return _op(h, "read", key, at=at, done=done, result={"value": value})


def test_stale_read_after_acknowledged_update():
    h = _h()
    _op(h, "write", "c", "v1", at=0.0, done=0.1)
    upd = _op(h, "write", "c", "v2", at=1.0, done=1.1)
    stale = _read(h, "c", "v1", 2.0, 2.01)  # v2 acked at 1.1: stale
    _read(h, "c", "v2", 2.1, 2.11)
    r = stale_reads(h)
    assert r.valid is False and r.counts == {"anomalies": 1, "reads": 2, "stale": 1, "unwritten": 0}
    a = r.anomalies[0]
    assert a["kind"] == "stale"
    assert [o["index"] for o in a["ops"][:2]] == [stale.index, upd.index]


def test_read_after_acknowledged_delete_is_stale_and_unwritten_values_flagged():
    h = _h()
    _op(h, "write", "c", "v1", at=0.0, done=0.1)
    _op(h, "delete", "c", at=1.0, done=1.1)
    _read(h, "c", "v1", 2.0, 2.1)  # deleted at 1.1: stale
    _read(h, "c", None, 2.2, 2.3)  # fine
    _read(h, "c", "never", 2.4, 2.5)  # no write produced it
    r = stale_reads(h)
    assert r.counts["stale"] == 1 and r.counts["unwritten"] == 1
    assert {a["kind"] for a in r.anomalies} == {"stale", "unwritten"}


def test_stale_reads_clean_with_concurrency_and_unknown_writes():
    h = _h()
    _op(h, "write", "c", "v1", at=0.0, done=0.1)
    _read(h, "c", None, -1.0, -0.9)  # before any write: the initial value
    _read(h, "c", "v1", 0.05, 0.2)  # concurrent with the write
    _op(h, "write", "c", "v2", at=1.0, done=3.0)  # slow update, concurrent with reads
    _read(h, "c", "v1", 1.5, 1.6)  # v2 not yet acknowledged: v1 is fine
    _read(h, "c", "v2", 1.7, 1.8)  # v2 took effect before its ack: fine
    _op(h, "write", "c", "v3", at=4.0, done=4.1, outcome="unknown")
    _read(h, "c", "v3", 9.0, 9.1)  # an unknown write may have happened
    _read(h, "c", "v2", 9.2, 9.3)  # ...or not: both fine
    _op(h, "write", "c", "v4", at=10.0, done=10.1, outcome="failed")
    _read(h, "c", "v2", 11.0, 11.1)  # failed write didn't happen
    _read(h, "d", None, 0.0, 0.1)  # key never written
    r = stale_reads(h)
    assert r.valid is True, r.anomalies
    assert r.counts["reads"] == 8


def test_stale_read_of_a_value_written_twice_uses_the_latest_source():
    h = _h()
    _op(h, "write", "c", "A", at=0.0, done=0.1)
    _op(h, "write", "c", "B", at=1.0, done=1.1)
    _op(h, "write", "c", "A", at=2.0, done=2.1)
    _read(h, "c", "A", 3.0, 3.1)
    assert stale_reads(h).valid is True


def test_stale_reads_budget():
    h = _h()
    _read(h, "c", None, 0, 1)
    assert stale_reads(h, deadline_s=0).valid == "unknown"


def test_checkers_scale_to_tens_of_thousands_of_ops():
    h = _h()
    last: dict[str, int] = {}
    for i in range(30_000):
        key = f"k{i % 3000}"
        t = i * 0.001
        if i % 3 == 0:
            _op(h, "write", key, i, at=t, done=t + 0.0005)
            last[key] = i
        elif i % 3 == 1:
            _read(h, key, last.get(key), t, t + 0.0005)
        else:
            _check(h, key, t, t + 0.0005)
    assert stale_reads(h, deadline_s=5).valid is True
    assert over_admission(h, 100, 1.0, deadline_s=5).valid is True
