"""Grader validity for rate-limiter's key domain: limiters that count only part of a key, or only
its ASCII, are caught by ``contract.key-domain``; the race check says how
likely it was to see a race of its stated size."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.app import App
from grading.report import Status
from provisioning import Environment
from tests.challenges.grading import grade_module

pytestmark = pytest.mark.slow
CHALLENGE = "rate-limiter"


@pytest.mark.parametrize("flaw", ["truncates_keys", "ascii_keys"])
async def test_a_limiter_that_merges_distinct_keys_is_caught(
    app: App, env: Environment, tmp_path: Path, flaw: str
) -> None:
    module = f"tests.fixtures.flawed.rate_limiter_{flaw}"
    report = await grade_module(app, CHALLENGE, module, env, tmp_path, seed=13)
    assert not report.passed  # a gate: a valid key is a promise
    domain = report.check("contract.key-domain")
    assert domain.status == Status.FAIL, domain.detail
    assert "the budget of the key before it" in domain.detail
    # cut at 64: the two keys of 128 characters that differ only in their last one;
    # made ASCII: those, when that last character is not ASCII, or the shorter pair
    told = ["but for its last character"] + (["' for '"] if flaw == "ascii_keys" else [])
    assert any(t in domain.detail for t in told), domain.detail
    # only the key domain is wrong: atomicity, the count, the contract's other cases hold
    for check_id in ("contract.allow-first", "contract.cost", "accuracy.atomic"):
        assert report.check(check_id).status == Status.PASS, check_id
    assert report.metrics["accuracy.over_admitted"] == 0
    # the race check ran until a race 1 ms wide would have been seen but for 1 in 1000
    assert report.metrics["accuracy.atomic.miss_probability"] <= 1e-3
    assert "would have been missed with probability" in report.check("accuracy.atomic").detail
