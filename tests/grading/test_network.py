"""The network's share of a remote target's latency (timed against a loopback server)."""

from __future__ import annotations

from dataclasses import replace

from grading import network
from grading.http import Client
from grading.report import Report, Status
from grading.urlguard import Policy, resolve_target
from tests.grading.servers import serve_app


async def test_round_trip_is_timed_and_the_service_share_reported() -> None:
    async with serve_app() as url:
        target = await resolve_target(url, Policy())
        assert not network.is_remote(target)  # loopback: the runner measures nothing
        # classified only, never connected to (a documentation address, RFC 5737)
        assert network.is_remote(replace(target, ip="203.0.113.7"))
        async with Client(target) as http:
            before = await network.round_trip_ms(http)
            after = await network.round_trip_ms(http, samples=2)
            missing = await network.round_trip_ms(http, samples=1, path="/nowhere")
    assert before is not None and after is not None and before > 0
    assert missing is None
    report = Report("c", url, None, 0, metrics={"load.p50_ms": 1000.0, "load.p99_ms": None})
    rtt = network.record(report, before, after)
    assert rtt == min(before, after)
    assert report.metrics["network.rtt_ms"] == round(rtt, 2)
    assert report.metrics["load.p50.service_ms"] == round(1000.0 - rtt, 2)
    assert "load.p99.service_ms" not in report.metrics  # no figure, nothing subtracted
    check = report.check(network.CHECK_ID)
    assert check.status is Status.PASS and check.max_points == 0
    assert "round trip" in check.detail


def test_an_unmeasured_round_trip_is_said_so() -> None:
    report = Report("c", "http://x", None, 0)
    assert network.record(report, None, None) is None
    assert report.metrics["network.rtt_ms"] is None
    assert report.check(network.CHECK_ID).status is Status.WARN
