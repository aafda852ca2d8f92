"""What a load run sends: the request and response types and the plan (rate, ramp,
duration, timeouts, what to send as the ``i``-th request), with its schedule of due times."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

MAX_REQUESTS = 20_000_000


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    tag: str = ""


@dataclass
class Response:
    status: int
    body: bytes  # at most BODY_CAP bytes
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names; last one wins


Classifier = Callable[[Request, Response], "str | None"]
OnResult = Callable[[int, Request, "Response | None", "str | None", float, float], None]


def default_classify(_request: Request, response: Response) -> str | None:
    """5xx → ``http_5xx``, 4xx → ``http_4xx``, anything else is OK."""
    if response.status >= 500:
        return "http_5xx"
    if response.status >= 400:
        return "http_4xx"
    return None


@dataclass
class LoadPlan:
    """What to send: ``rate`` req/s (ramping linearly to ``ramp_to``) for ``duration_s``."""

    rate: float
    duration_s: float
    make_request: Callable[[int], Request]
    ramp_to: float | None = None
    timeout_s: float = 2.0
    max_in_flight: int = 1024
    connections: int = 64
    classify: Classifier | None = None
    on_result: OnResult | None = None
    bucket_s: float = 0.25

    def __post_init__(self) -> None:
        end = self.rate if self.ramp_to is None else self.ramp_to
        if self.rate < 0 or end < 0 or max(self.rate, end) <= 0:
            raise ValueError("the rate must be positive (a ramp may start or end at 0)")
        if self.duration_s <= 0 or self.timeout_s <= 0 or self.bucket_s <= 0:
            raise ValueError("duration_s, timeout_s and bucket_s must be positive")
        if self.max_in_flight < 1 or self.connections < 1:
            raise ValueError("max_in_flight and connections must be at least 1")
        if self.total > MAX_REQUESTS:
            raise ValueError(f"{self.total:,} requests planned; at most {MAX_REQUESTS:,} per run")

    @property
    def _slope(self) -> float:
        return 0.0 if self.ramp_to is None else (self.ramp_to - self.rate) / self.duration_s

    @property
    def total(self) -> int:
        """How many requests fall inside the duration."""
        end = self.rate if self.ramp_to is None else self.ramp_to
        return max(0, math.ceil((self.rate + end) / 2 * self.duration_s - 1e-9))

    @property
    def mean_rate(self) -> float:
        return self.total / self.duration_s

    def due_s(self, i: int) -> float:
        """When request ``i`` is due, in seconds since the start (inverse of the ramp)."""
        k = self._slope
        if k == 0.0:
            return i / self.rate
        denom = self.rate + math.sqrt(max(0.0, self.rate * self.rate + 2 * k * i))
        return 2 * i / denom if denom > 0 else 0.0

    def due_array(self, n: int) -> np.ndarray:
        i = np.arange(n, dtype=np.float64)
        k = self._slope
        if k == 0.0:
            return i / self.rate
        denom = self.rate + np.sqrt(np.maximum(0.0, self.rate**2 + 2 * k * i))
        return np.divide(2 * i, denom, out=np.zeros_like(i), where=denom > 0)


def plan_from_cli(
    method: str,
    path: str,
    body: str | None,
    headers: list[str] | tuple[str, ...],
    rate: float,
    duration: float,
) -> LoadPlan:
    """A constant-rate plan of one repeated request (``--body`` is JSON, ``--header K: V``)."""
    pairs = []
    for h in headers:
        name, sep, value = h.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"a header is 'Name: value', not {h!r}")
        pairs.append((name.strip(), value.strip()))
    data = b""
    if body is not None:
        try:
            json.loads(body)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--body is not valid JSON: {exc}") from None
        data = body.encode()
        if not any(n.lower() == "content-type" for n, _ in pairs):
            pairs.append(("Content-Type", "application/json"))
    if path and not path.startswith("/"):
        path = "/" + path
    request = Request(method.upper(), path, data, tuple(pairs))
    return LoadPlan(rate=rate, duration_s=duration, make_request=lambda _i: request)
