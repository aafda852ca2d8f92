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

Latency thresholds are then judged on the service's share (:func:`on_service_share`): an upper
limit on a request's latency (``p99 < 10ms``; the catalog's are 10-50 ms) is tighter than many
network paths alone, so the measured latency is held to the limit plus the round trip measured
before the load. The check above names every threshold
so judged. Error and rate thresholds are judged as measured.

A target counts as remote when its pinned address is not loopback, or when it is the address
the graded environment is exposed on (``CRUSCIBLE_PUBLIC_HOST``) other than 127.0.0.1: the
path a learner elsewhere takes, which tests take on another loopback address (127.0.0.2).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import replace

from grading.http import Client
from grading.report import Check, Report, Status
from grading.thresholds import Threshold
from grading.urlguard import Target
from provisioning import Environment

SAMPLES = 5
HEALTH_PATH = "/healthz"
CHECK_ID = "network.round-trip"


def is_remote(target: Target, env: Environment | None = None) -> bool:
    """Whether ``target`` is reached as from elsewhere: its pinned address is off this host
    (anything but loopback), or is the address ``env`` is exposed on (a public host on another
    loopback address than 127.0.0.1)."""
    ip = ipaddress.ip_address(target.ip)
    return not ip.is_loopback or ip in exposed_addresses(env)


def exposed_addresses(
    env: Environment | None,
) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The addresses (IP literals) ``env``'s resources are published on, loopback's own
    127.0.0.1 and ::1 aside (an environment that is not exposed has none)."""
    found = set()
    for info in env.resources.values() if env is not None else ():
        try:
            ip = ipaddress.ip_address(info.host.strip("[]"))
        except ValueError:
            continue  # a name: a public one resolves off loopback, which is_remote sees
        if str(ip) not in ("127.0.0.1", "::1"):
            found.add(ip)
    return found


def on_service_share(threshold: Threshold, rtt_ms: float | None) -> Threshold | None:
    """The threshold to judge measured latencies with so that ``threshold`` applies to the
    service's share: its limit plus the round trip (ms). None when it is judged as measured
    (no round trip known, not a latency, or a lower limit)."""
    if rtt_ms is None or not threshold.is_latency or threshold.op not in ("<", "<="):
        return None
    return replace(threshold, limit=threshold.limit + rtt_ms)


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


def record(
    report: Report,
    before_ms: float | None,
    after_ms: float | None,
    judged_on_share: Sequence[str] = (),
) -> float | None:
    """Put the round trip and the service's share of each latency into ``report``; return the
    round trip used (None when neither measurement got an answer). ``judged_on_share`` are the
    ids of the checks whose latency threshold was judged on the service's share."""
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
        )
        if judged_on_share and before_ms is not None:
            detail += (
                "Judged on the service's share (the measured latency minus the round trip "
                f"before the load, {before_ms:.1f} ms), as no network path is promised to meet "
                f"them: {', '.join(judged_on_share)}; other thresholds as measured."
            )
        else:
            detail += "Thresholds are judged on the latency as measured, network included."
    report.checks.append(
        Check(
            CHECK_ID,
            "latency measured over a network",
            Status.PASS if rtt is not None else Status.WARN,
            0,
            0,
            detail,
            {
                "rtt_before_ms": before_ms,
                "rtt_after_ms": after_ms,
                "judged_on_service_share": list(judged_on_share),
            },
        )
    )
    return rtt
