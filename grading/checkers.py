"""Checkers over a history and/or what was stored, each with a time budget.

Every checker returns a ``CheckResult``. ``valid`` is ``True`` (no anomaly in all the
data), ``False`` (at least one anomaly: certain, even if the check then ran out of time)
or ``"unknown"`` (no anomaly found before the ``deadline_s`` budget ran out).
Anomalies keep at most ``MAX_ANOMALIES`` examples; ``counts["anomalies"]`` has them all.
``counts`` holds numbers, plus per-key maps where a checker says so.
"""

from __future__ import annotations

import bisect
import functools
import json
import math
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from grading.history import History, Op

Validity = bool | Literal["unknown"]
MAX_ANOMALIES = 100
DEFAULT_DEADLINE_S = 10.0


@dataclass
class CheckResult:
    name: str
    valid: Validity
    anomalies: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _OutOfTime(Exception):
    pass


class _Run:
    """The state of one checker run: its budget and what it found so far."""

    def __init__(self, deadline_s: float | None) -> None:
        self._deadline = None if deadline_s is None else time.monotonic() + deadline_s
        self.anomalies: list[dict[str, Any]] = []
        self.counts: dict[str, Any] = {"anomalies": 0}
        self.progress = ""

    def tick(self, progress: str = "") -> None:
        """Raise ``_OutOfTime`` once the budget is spent; ``progress`` says how far we got."""
        if self._deadline is not None and time.monotonic() >= self._deadline:
            self.progress = progress
            raise _OutOfTime

    def anomaly(self, message: str, **details: Any) -> None:
        self.counts["anomalies"] += 1
        if len(self.anomalies) < MAX_ANOMALIES:
            self.anomalies.append({"message": message, **details})


def _budgeted(name: str) -> Callable[[Callable[..., str]], Callable[..., CheckResult]]:
    """Turn ``fn(run, *args) -> reason`` into a checker with a ``deadline_s`` budget."""

    def wrap(fn: Callable[..., str]) -> Callable[..., CheckResult]:
        @functools.wraps(fn)
        def checker(*args: Any, deadline_s: float | None = DEFAULT_DEADLINE_S, **kw: Any):
            run = _Run(deadline_s)
            try:
                reason = fn(run, *args, **kw)
            except _OutOfTime:
                found = run.counts["anomalies"] > 0
                reason = f"ran out of its {deadline_s:g} s budget" + (
                    f" ({run.progress})" if run.progress else ""
                )
                if found:
                    reason += "; the anomalies listed are certain, others may be missing"
                valid: Validity = False if found else "unknown"
                return CheckResult(name, valid, run.anomalies, run.counts, reason)
            valid = run.counts["anomalies"] == 0
            return CheckResult(name, valid, run.anomalies, run.counts, reason)

        return checker

    return wrap


@_budgeted("acknowledged-lost")
def acknowledged_lost(
    run: _Run, history: History, stored_keys: Collection[str], *, kind: str = "write"
) -> str:
    """Writes the service acknowledged (``ok``) whose key is missing from the store.

    Keys with any delete op that may have happened (ok or unknown) are skipped: their
    absence is allowed. Unknown writes that were stored are counted, never blamed.
    """
    stored = set(stored_keys)
    deleted = {op.key for op in history.filter(kind="delete") if op.outcome != "failed"}
    acked = unknown_stored = 0
    for i, op in enumerate(history.filter(kind=kind)):
        run.tick(f"{i} writes checked")
        if op.outcome == "unknown" and op.key in stored:
            unknown_stored += 1
        if op.outcome != "ok":
            continue
        acked += 1
        if op.key not in stored and op.key not in deleted:
            run.anomaly(
                f"write of {op.key!r} was acknowledged at {op.completed_s:.3f} s "
                "but is not in the store",
                ops=[op.to_dict()],
            )
    run.counts.update(acknowledged=acked, lost=run.counts["anomalies"])
    run.counts["unknown_but_stored"] = unknown_stored
    return f"{run.counts['lost']} of {acked} acknowledged writes missing from the store"


@_budgeted("duplicates")
def duplicates(run: _Run, deliveries: Iterable[str]) -> str:
    """Idempotency keys delivered more than once; ``counts["duplicated"]`` maps key -> times."""
    seen: Counter[str] = Counter()
    for i, key in enumerate(deliveries):
        if i % 4096 == 0:
            run.tick(f"{i} deliveries read")
        seen[key] += 1
    duplicated = {key: n for key, n in seen.items() if n > 1}
    for key, n in duplicated.items():
        run.anomaly(f"{key!r} was delivered {n} times", key=key, deliveries=n)
    total = sum(seen.values())
    extra = sum(duplicated.values()) - len(duplicated)
    run.counts.update(deliveries=total, distinct=len(seen), extra=extra, duplicated=duplicated)
    return f"{extra} extra deliveries over {len(duplicated)} keys out of {total} deliveries"


@_budgeted("phantom-writes")
def phantom_writes(
    run: _Run, history: History, stored_keys: Collection[str], *, kind: str = "write"
) -> str:
    """Stored items that no op ever asked for (whatever its outcome)."""
    invoked = {op.key for op in history.filter(kind=kind)}
    stored = 0
    for i, key in enumerate(stored_keys):
        if i % 4096 == 0:
            run.tick(f"{i} stored items checked")
        stored += 1
        if key not in invoked:
            run.anomaly(f"{key!r} is stored but no {kind} ever asked for it", key=key)
    run.counts.update(stored=stored, phantoms=run.counts["anomalies"])
    return f"{run.counts['phantoms']} of {stored} stored items were never written"


def _admitted(op: Op) -> bool:
    return op.outcome == "ok" and op.result.get("allowed", True) is not False


@_budgeted("over-admission")
def over_admission(
    run: _Run,
    history: History,
    limit: int,
    window_s: float,
    *,
    kind: str = "check",
    admitted: Callable[[Op], bool] = _admitted,
) -> str:
    """Per key, the most admissions certainly inside one sliding window of ``window_s``.

    An admission took effect somewhere in ``[invoked_s, completed_s]``. We count only ops
    whose *whole* interval lies in a half-open window ``[t, t + window_s)``: those were
    certainly admitted within it, so the count never blames latency on the service
    (a lower bound of the true maximum). Admitted: ``ok`` unless ``result["allowed"]``
    is false (record a 429 as ``failed``, or ``ok`` with ``allowed: false``), unless
    ``admitted`` says otherwise. ``counts["max_in_window"]`` maps each key to its maximum,
    ``counts["boundary_burst"]`` is the largest, ``counts["excess"]`` sums
    ``max(0, max - limit)`` over keys.
    """
    groups = history.by_key(kind)
    excess = worst = admitted_total = 0
    per_key: dict[str, int] = {}
    for n_key, (key, ops) in enumerate(groups.items()):
        run.tick(f"{n_key} of {len(groups)} keys checked")
        spans = sorted(
            ((op.invoked_s, op.completed_s, op) for op in ops if admitted(op)),
            key=lambda s: (s[0], s[1]),
        )
        admitted_total += len(spans)
        best, best_at = 0, 0
        hi = 0
        for lo, (start, _, _) in enumerate(spans):
            if lo % 1024 == 1023:
                run.tick(f"{n_key} of {len(groups)} keys checked")
            end = start + window_s
            hi = max(hi, lo)
            while hi < len(spans) and spans[hi][0] < end:
                hi += 1
            inside = sum(1 for s in spans[lo:hi] if s[1] < end)
            if inside > best:
                best, best_at = inside, lo
        per_key[str(key)] = best
        worst = max(worst, best)
        if best > limit:
            excess += best - limit
            start = spans[best_at][0]
            window = [
                s[2].to_dict()
                for s in spans[best_at:]
                if s[0] < start + window_s and s[1] < start + window_s
            ]
            run.anomaly(
                f"key {key!r}: {best} requests admitted within {window_s:g} s "
                f"from {start:.3f} s (limit {limit})",
                key=key,
                max_in_window=best,
                window_start_s=start,
                ops=window[: limit + 5],
            )
    run.counts.update(
        keys=len(groups),
        admitted=admitted_total,
        boundary_burst=worst,
        excess=excess,
        max_in_window=per_key,
    )
    return f"most admitted for one key in any {window_s:g} s window: {worst} (limit {limit})"


@_budgeted("starvation")
def starvation(
    run: _Run,
    history: History,
    window_s: float,
    *,
    kind: str = "check",
    tolerance_s: float = 1.0,
    admitted: Callable[[Op], bool] = _admitted,
) -> str:
    """The "at least" side of a limit: a client refused keeps being refused too long.

    Whatever the algorithm (fixed or sliding window, sliding log, token bucket), a client
    that keeps asking after a refusal is admitted again within one window: the window
    resets, its oldest admission leaves it, or a token comes back. Per key, a *lockout* runs
    from a refusal to the next admission; only what is certain counts (from the refusal's
    completion to the admission's invocation). A lockout longer than ``window_s +
    tolerance_s`` — or a refusal followed by nothing but refusals for that long, until the
    history ends — is an anomaly. ``counts["longest_lockout_s"]`` is the longest lockout
    seen (open-ended ones measured to the key's last op), ``counts["starved_keys"]`` how
    many keys were locked out too long.
    """
    groups = history.by_key(kind)
    longest = 0.0
    for n_key, (key, ops) in enumerate(groups.items()):
        run.tick(f"{n_key} of {len(groups)} keys checked")
        done = sorted((op for op in ops if op.done), key=lambda op: op.invoked_s)
        lockouts: list[tuple[float, float, bool]] = []  # (refused at, until, admitted then)
        refused_at: float | None = None
        for op in done:
            if admitted(op):
                if refused_at is not None:
                    lockouts.append((refused_at, op.invoked_s, True))
                refused_at = None
            elif refused_at is None and (
                op.outcome == "failed" or op.result.get("allowed") is False
            ):
                refused_at = op.completed_s
        if refused_at is not None:  # still refused when the history ends
            lockouts.append((refused_at, done[-1].invoked_s, False))
        for start, until, readmitted in lockouts:
            lockout = until - start
            longest = max(longest, lockout)
            if lockout > window_s + tolerance_s:
                then = "not admitted again until" if readmitted else "still refused at"
                run.anomaly(
                    f"key {key!r}: refused from {start:.3f} s and {then} {until:.3f} s "
                    f"({lockout:.1f} s, more than one {window_s:g} s window)",
                    key=key,
                    lockout_s=round(lockout, 3),
                )
    run.counts.update(
        keys=len(groups), longest_lockout_s=round(longest, 3), starved_keys=run.counts["anomalies"]
    )
    return f"longest lockout of a client that kept asking: {longest:.1f} s (window {window_s:g} s)"


def burst_over_admission(
    results_by_key: Mapping[str, Sequence[bool]], limit: int
) -> tuple[int, dict[str, int]]:
    """For concurrent bursts on fresh keys: admissions beyond ``limit``, total and per key."""
    per_key = {
        key: max(0, sum(1 for a in allowed if a) - limit) for key, allowed in results_by_key.items()
    }
    return sum(per_key.values()), per_key


@_budgeted("counter-exactness")
def counter_exactness(run: _Run, expected: Mapping[str, int], actual: Mapping[str, int]) -> str:
    """Keys whose counter differs from what was sent (a missing key counts as 0).

    ``counts["errors"]`` maps each miscounted key to ``actual - expected``.
    """
    keys = sorted(set(expected) | set(actual), key=str)
    abs_error = over = under = 0
    errors: dict[str, int] = {}
    for i, key in enumerate(keys):
        if i % 4096 == 0:
            run.tick(f"{i} of {len(keys)} keys compared")
        want, got = expected.get(key, 0), actual.get(key, 0)
        if want == got:
            continue
        errors[key] = got - want
        abs_error += abs(got - want)
        over += got > want
        under += got < want
        run.anomaly(f"{key!r}: expected {want}, got {got}", key=key, expected=want, actual=got)
    run.counts.update(
        keys=len(keys),
        miscounted=len(errors),
        total_abs_error=abs_error,
        over=over,
        under=under,
        errors=errors,
    )
    return f"{len(errors)} of {len(keys)} counters wrong, total error {abs_error}"


def _hashable(value: Any) -> Any:
    try:
        hash(value)
    except TypeError:
        return json.dumps(value, sort_keys=True, default=str)
    return value


class _Register:
    """The writes of one key, indexed for ``stale_reads``."""

    def __init__(self, writes: list[Op]) -> None:
        acked = sorted((w for w in writes if w.outcome == "ok"), key=lambda w: w.completed_s)
        self.acked_done = [w.completed_s for w in acked]
        # latest[i]: the acknowledged write with the latest invocation among acked[: i + 1]
        self.latest: list[Op] = []
        for w in acked:
            prev = self.latest[-1] if self.latest else None
            self.latest.append(w if prev is None or w.invoked_s > prev.invoked_s else prev)
        self.sources: dict[Any, list[Op]] = {}
        for w in writes:
            if w.outcome != "failed":
                value = None if w.kind == "delete" else w.value
                self.sources.setdefault(_hashable(value), []).append(w)

    def newest_acked_before(self, t: float) -> Op | None:
        i = bisect.bisect_left(self.acked_done, t)
        return self.latest[i - 1] if i else None


@_budgeted("stale-reads")
def stale_reads(
    run: _Run,
    history: History,
    *,
    write_kinds: tuple[str, ...] = ("write", "delete"),
    read_kind: str = "read",
) -> str:
    """Reads that returned a value a later acknowledged write had already replaced.

    Per key, a register: a ``write`` sets ``op.value``, a ``delete`` sets ``None`` (also the
    initial value); an ``ok`` read returns ``result["value"]``. A read R is stale when
    every write W that could have produced its value is superseded: some ``ok`` write L
    completed before R was invoked, and W completed before L was invoked (so W, then L,
    then R in real time). Unknown writes may take effect at any time after invocation,
    so they never make a read stale; failed writes are never a source. A value no
    possible write produced is an ``unwritten`` anomaly.
    """
    writes = history.by_key(write_kinds)
    reads = history.filter(kind=read_kind, outcome="ok")
    registers: dict[Any, _Register] = {}
    stale = unwritten = 0
    for i, read in enumerate(reads):
        if i % 1024 == 0:
            run.tick(f"{i} of {len(reads)} reads checked")
        reg = registers.get(read.key)
        if reg is None:
            reg = registers[read.key] = _Register(writes.get(read.key, []))
        value = read.result.get("value")
        candidates = [
            w for w in reg.sources.get(_hashable(value), []) if w.invoked_s < read.completed_s
        ]

        def effective_done(w: Op) -> float:
            return w.completed_s if w.outcome == "ok" else math.inf

        source = max(candidates, key=effective_done, default=None)
        if source is None and value is not None:
            unwritten += 1
            run.anomaly(
                f"read of {read.key!r} at {read.invoked_s:.3f} s returned {value!r}, "
                "which no write could have produced",
                kind="unwritten",
                ops=[read.to_dict()],
            )
            continue
        source_done = -math.inf if source is None else effective_done(source)
        newer = reg.newest_acked_before(read.invoked_s)
        if newer is not None and source_done < newer.invoked_s:
            stale += 1
            new_value = None if newer.kind == "delete" else newer.value
            run.anomaly(
                f"read of {read.key!r} at {read.invoked_s:.3f} s returned {value!r}, but "
                f"{new_value!r} was acknowledged at {newer.completed_s:.3f} s, before the read began",
                kind="stale",
                ops=[read.to_dict(), newer.to_dict()] + ([source.to_dict()] if source else []),
            )
    run.counts.update(reads=len(reads), stale=stale, unwritten=unwritten)
    return f"{stale} stale and {unwritten} unwritten values in {len(reads)} reads"
