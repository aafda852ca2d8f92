"""The network's share of a remote target's latency (timed against a loopback server)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from grading import network
from grading.http import Client
from grading.report import Report, Status
from grading.thresholds import Threshold
from grading.urlguard import Policy, resolve_target
from provisioning.environment import Environment, ResourceInfo
from provisioning.spec import Resource
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


def _env(host: str) -> Environment:
    now = datetime.now(UTC)
    info = ResourceInfo(kind=Resource.REDIS, host=host, port=6379)
    return Environment("env-x", "o", "local", "", now, now, {Resource.REDIS: info})


async def test_a_target_on_the_exposed_loopback_host_is_remote() -> None:
    target = await resolve_target("http://127.0.0.2:8080", Policy())
    assert network.is_remote(target, _env("127.0.0.2"))  # the public path, tried on loopback
    assert not network.is_remote(target, _env("127.0.0.1"))  # an environment not exposed
    assert not network.is_remote(target, _env("learners.example.test"))
    assert not network.is_remote(target)


def test_latency_thresholds_are_judged_on_the_service_share() -> None:
    p99 = Threshold.parse("p99 < 10ms")
    shifted = network.on_service_share(p99, 30.0)
    assert shifted is not None and shifted.limit == 40.0 and shifted.op == "<"
    assert shifted.passes(35.0) and not p99.passes(35.0)  # 5 ms of service, 30 ms of network
    assert network.on_service_share(p99, None) is None  # no round trip measured
    assert network.on_service_share(Threshold.parse("errors < 1%"), 30.0) is None
    assert network.on_service_share(Threshold.parse("rate >= 100/s"), 30.0) is None
    report = Report("c", "http://x", None, 0, metrics={"load.p99_ms": 35.0})
    network.record(report, 30.0, 31.0, ["load.latency"])
    check = report.check(network.CHECK_ID)
    assert "service's share" in check.detail and "load.latency" in check.detail
    assert check.evidence["judged_on_service_share"] == ["load.latency"]
    assert report.metrics["load.p99.service_ms"] == 5.0
