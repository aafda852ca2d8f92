"""The network's share of a remote target's latency.

When the service under test is not on the grader's host (the learner deployed it elsewhere and
uses an exposed environment), every latency the grader measures includes the round trip over
the network. The grader times ``GET /healthz`` a few times before and after the load; the
fastest answer bounds the network's round trip from above (it also holds the service's own
time for its cheapest endpoint). The report then carries, in milliseconds:

- ``network.rtt_ms``: the round trip (the smaller of the two measurements' minimums),
  ``network.rtt_before_ms`` / ``network.rtt_after_ms``: each measurement's minimum;
- ``<name>.service_ms`` next to each ``<name>.p50_ms`` / ``<name>.p99_ms`` latency metric:
  that latency minus the round trip (not below zero): the service's share;

and an informational check (0 points) that says so. A loopback target gets none of these.
"""

from __future__ import annotations

import ipaddress

from grading.http import Client
from grading.report import Check, Report, Status
from grading.urlguard import Target

SAMPLES = 5
HEALTH_PATH = "/healthz"
CHECK_ID = "network.round-trip"


def is_remote(target: Target) -> bool:
    """Whether ``target``'s pinned address is off this host (anything but loopback)."""
    return not ipaddress.ip_address(target.ip).is_loopback


async def round_trip_ms(
    http: Client, samples: int = SAMPLES, path: str = HEALTH_PATH, timeout_s: float = 3.0
) -> float | None:
    """The fastest of ``samples`` sequential ``GET path`` answered 200, in ms; None if none was.

    Bounded: at most ``samples`` requests of ``timeout_s`` each.
    """
    times = []
    for _ in range(samples):
        ex = await http.request("GET", path, timeout_s=timeout_s)
        if ex.status == 200 and ex.elapsed_ms is not None:
            times.append(ex.elapsed_ms)
    return min(times) if times else None


def record(report: Report, before_ms: float | None, after_ms: float | None) -> float | None:
    """Put the round trip and the service's share of each latency into ``report``; return the
    round trip used (None when neither measurement got an answer)."""
    measured = [v for v in (before_ms, after_ms) if v is not None]
    report.metrics["network.rtt_before_ms"] = None if before_ms is None else round(before_ms, 2)
    report.metrics["network.rtt_after_ms"] = None if after_ms is None else round(after_ms, 2)
    rtt = min(measured) if measured else None
    report.metrics["network.rtt_ms"] = None if rtt is None else round(rtt, 2)
    if rtt is None:
        detail = (
            "the service is not on the grader's host, but GET /healthz never answered 200 "
            "when timed: latencies include an unknown network round trip"
        )
    else:
        for name, value in list(report.metrics.items()):
            latency = name.endswith(("p50_ms", "p99_ms")) and not name.startswith("network.")
            if latency and isinstance(value, int | float):
                base = name.removesuffix("_ms")
                report.metrics[f"{base}.service_ms"] = round(max(0.0, value - rtt), 2)
        detail = (
            f"the service is not on the grader's host: each request's latency includes a "
            f"network round trip of about {rtt:.1f} ms (fastest GET /healthz before and after "
            f"the load); the *.service_ms figures subtract it to show the service's own share. "
            f"Thresholds are judged on the latency as measured, network included."
        )
    report.checks.append(
        Check(
            CHECK_ID,
            "latency measured over a network",
            Status.PASS if rtt is not None else Status.WARN,
            0,
            0,
            detail,
            {"rtt_before_ms": before_ms, "rtt_after_ms": after_ms},
        )
    )
    return rtt
