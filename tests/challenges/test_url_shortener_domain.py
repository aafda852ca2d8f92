"""Grader validity for url-shortener's data: a refused create counts against the service and
shifts no other link's verdict, and URLs from the contract's whole domain (long, odd but valid
characters, percent-escapes, any case) catch a service that stores them altered."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.app import App
from grading.report import Status
from provisioning import Environment
from tests.challenges.grading import grade_module

pytestmark = pytest.mark.slow
CHALLENGE = "url-shortener"


async def test_refused_creates_count_against_the_service_and_shift_nothing(
    app: App, env: Environment, tmp_path: Path
) -> None:
    """Every 50th create answers 503: 20 of the 1,000 links are lost. The verdict names them,
    and the links created around them are judged as themselves (before, every link after a
    refused create was looked up at the next one's URL: a flood of wrong redirects)."""
    module = "tests.fixtures.flawed.shortener_refuses_some_creates"
    report = await grade_module(app, CHALLENGE, module, env, tmp_path, seed=7)
    assert not report.passed  # a gate: a refused create is a link lost
    resolve = report.check("links.resolve")
    assert resolve.status == Status.FAIL, resolve.detail
    assert report.metrics["links.refused"] == 20
    assert report.metrics["links.created"] == report.metrics["links.verified"] == 980
    assert report.metrics["links.wrong"] == 0, resolve.detail
    assert "20 of 1000 creates of a valid URL got no code (503 ×20)" in resolve.detail
    assert "0 of the 980 links created by the grader do not redirect" in resolve.detail
    for check_id in ("load.errors", "faults.availability"):
        kinds = report.check(check_id).evidence.get("errors_by_kind", {})
        assert not {"wrong_location", "404_for_a_live_link"} & set(kinds), (check_id, kinds)
    assert report.check("cache.fresh").status == Status.PASS


@pytest.mark.parametrize(
    ("flaw", "how"),
    [
        ("normalises_urls", "redirected to a URL the grader never sent"),
        ("truncates_urls", "cut to 255 of its"),
    ],
    ids=["normalises", "truncates"],
)
async def test_urls_stored_altered_are_caught(
    app: App, env: Environment, tmp_path: Path, flaw: str, how: str
) -> None:
    """A service that stores what a URL library makes of the URL, or its first 255 characters,
    answers every request with the right status; only ``Location`` compared byte for byte,
    on URLs from the contract's whole domain, shows the flaw."""
    module = f"tests.fixtures.flawed.shortener_{flaw}"
    report = await grade_module(app, CHALLENGE, module, env, tmp_path, seed=7)
    assert not report.passed
    resolve = report.check("links.resolve")
    assert resolve.status == Status.FAIL, resolve.detail
    assert report.metrics["links.altered"] > 0
    assert report.metrics["links.wrong"] == report.metrics["links.altered"]
    assert report.metrics["links.refused"] == 0
    assert how in resolve.detail, resolve.detail
    kinds = report.check("load.errors").evidence.get("errors_by_kind", {})
    assert kinds.get("wrong_location", 0) > 0, kinds
