"""Open-model load generation: requests leave on schedule whether or not earlier ones returned.

One scheduler coroutine sleeps until the next due time and dispatches every due request
in a batch. Each request goes out on a keep-alive HTTP/1.1 connection to the pinned
:attr:`Target.ip` (a hand-written :class:`asyncio.Protocol` with httptools' parser; one
request in flight per connection; connections opened lazily up to a pool size). Latency
is measured from the *scheduled* send time (corrected for coordinated omission) and from
the actual send (raw). When every connection is busy, or ``max_in_flight`` requests are
outstanding, due requests wait — still timed from their schedule — and time out
``timeout_s`` after it. Nothing waits unbounded: a run ends at most ``timeout_s`` after
its duration, leftovers counted as timeouts.

Per-request results go into flat arrays indexed by request number (no per-request
objects); histograms and the timeline are built from them when the run ends.

Modules, one job each: :mod:`~grading.load.plan` (what to send), :mod:`~grading.load.wire`
(HTTP/1.1 bytes and connections), :mod:`~grading.load.run` (the scheduler) and
:mod:`~grading.load.result` (the statistics). The terminal's table of a result is the CLI's
(``bot/loadtable.py``).
"""

from grading.load.plan import (
    MAX_REQUESTS,
    Classifier,
    LoadPlan,
    OnResult,
    Request,
    Response,
    default_classify,
    plan_from_cli,
)
from grading.load.result import HIST_MAX_US, LAG_LIMIT_MS, SEND_RATE_FLOOR, LoadResult
from grading.load.run import EARLY_S, SWEEP_S, TICK_S, run_load, run_load_sync
from grading.load.wire import BODY_CAP, USER_AGENT, encode_request

__all__ = [
    "BODY_CAP",
    "EARLY_S",
    "HIST_MAX_US",
    "LAG_LIMIT_MS",
    "MAX_REQUESTS",
    "SEND_RATE_FLOOR",
    "SWEEP_S",
    "TICK_S",
    "USER_AGENT",
    "Classifier",
    "LoadPlan",
    "LoadResult",
    "OnResult",
    "Request",
    "Response",
    "default_classify",
    "encode_request",
    "plan_from_cli",
    "run_load",
    "run_load_sync",
]
