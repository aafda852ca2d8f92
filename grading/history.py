"""Histories of operations, in the spirit of Jepsen: what was asked, what came back, and when.

An operation is *invoked* (the request leaves) and later *completed* with an outcome:

- ``ok``: the service acknowledged it; it happened.
- ``failed``: it definitely did not happen (e.g. a 4xx rejection before any effect).
- ``unknown``: timeout, connection lost, 5xx — it may or may not have happened.

An op that never completes keeps ``completed_s=None`` and outcome ``unknown``.
Times are seconds since the history's origin (the load phase start, like ``Timeline``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Outcome = Literal["ok", "failed", "unknown"]
OUTCOMES: tuple[Outcome, ...] = ("ok", "failed", "unknown")


@dataclass(slots=True)
class Op:
    """One operation: ``value`` is what was sent, ``result`` the payload that came back."""

    index: int
    process: str | int
    kind: str
    key: str | None
    value: Any
    invoked_s: float
    completed_s: float | None = None
    outcome: Outcome = "unknown"
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.completed_s is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "process": self.process,
            "kind": self.kind,
            "key": self.key,
            "value": self.value,
            "invoked_s": self.invoked_s,
            "completed_s": self.completed_s,
            "outcome": self.outcome,
            "result": self.result,
        }


class History:
    """An append-only list of ops; ``clock`` gives absolute seconds, ``origin`` is time zero."""

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, origin: float | None = None
    ) -> None:
        self._clock = clock
        self.origin = clock() if origin is None else origin
        self.ops: list[Op] = []

    def now(self) -> float:
        return self._clock() - self.origin

    def invoke(
        self,
        process: str | int,
        kind: str,
        key: str | None = None,
        value: Any = None,
        *,
        invoked_s: float | None = None,
    ) -> Op:
        """Record that ``process`` sent a ``kind`` op; ``invoked_s`` overrides the clock."""
        at = self.now() if invoked_s is None else invoked_s
        op = Op(len(self.ops), process, kind, key, value, at)
        self.ops.append(op)
        return op

    def complete(
        self,
        op: Op,
        outcome: Outcome,
        result: dict[str, Any] | None = None,
        completed_s: float | None = None,
    ) -> Op:
        """Record the op's outcome and returned payload; ``completed_s`` overrides the clock."""
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, not {outcome!r}")
        if op.completed_s is not None:
            raise ValueError(f"op {op.index} already completed")
        op.completed_s = self.now() if completed_s is None else completed_s
        op.outcome = outcome
        if result:
            op.result = result
        return op

    def __len__(self) -> int:
        return len(self.ops)

    def __iter__(self) -> Iterator[Op]:
        return iter(self.ops)

    def filter(
        self,
        *,
        key: str | None = None,
        kind: str | tuple[str, ...] | None = None,
        outcome: Outcome | None = None,
    ) -> list[Op]:
        """Ops matching every given criterion (``kind`` may be a tuple of kinds)."""
        kinds = (kind,) if isinstance(kind, str) else kind
        return [
            op
            for op in self.ops
            if (key is None or op.key == key)
            and (kinds is None or op.kind in kinds)
            and (outcome is None or op.outcome == outcome)
        ]

    def by_key(self, kind: str | tuple[str, ...] | None = None) -> dict[str | None, list[Op]]:
        """Ops grouped by key, each group in invocation order."""
        groups: dict[str | None, list[Op]] = {}
        for op in self.filter(kind=kind):
            groups.setdefault(op.key, []).append(op)
        return groups

    def counts(self) -> dict[str, int]:
        """How many ops ended in each outcome (pending ops count as ``unknown``)."""
        out = dict.fromkeys(OUTCOMES, 0)
        for op in self.ops:
            out[op.outcome] += 1
        return out

    def to_list(self) -> list[dict[str, Any]]:
        return [op.to_dict() for op in self.ops]

    def write_json(self, path: Path) -> Path:
        """Write the history as a JSON array of ops."""
        path.write_text(json.dumps(self.to_list(), default=str) + "\n")
        return path

    @classmethod
    def from_list(cls, rows: list[dict[str, Any]]) -> History:
        """Rebuild a history from ``to_list()`` output (e.g. to re-check a saved run)."""
        history = cls(clock=lambda: 0.0, origin=0.0)
        for row in rows:
            op = history.invoke(
                row["process"], row["kind"], row["key"], row["value"], invoked_s=row["invoked_s"]
            )
            op.completed_s = row["completed_s"]
            op.outcome = row["outcome"]
            op.result = dict(row["result"])
        return history
