"""Markdown report, score card and files on disk, for passing and failing reports."""

import json
import re

from grading.render import (
    SCORECARD_MAX_CHARS,
    cell,
    codeblock,
    inline,
    render_markdown,
    render_scorecard,
    write_report,
)
from grading.report import Architecture, Check, FaultOutcome, Report, Status
from grading.timeline import Bucket, Timeline

CURL = 'curl -sS -X POST http://127.0.0.1:8081/v1/check -H \'content-type: application/json\' -d \'{"key":"k|1","cost":1}\''


def _failing() -> Report:
    return Report(
        challenge="rate-limiter",
        target="http://127.0.0.1:8081",
        environment="env-7f3a",
        seed=1234,
        score=62,
        passed=False,
        duration_s=41.23,
        checks=[
            Check("contract.allow-first", "Allow the first request", Status.PASS, 10, 10),
            Check(
                "accuracy.burst",
                "Concurrent burst stays within the limit",
                Status.FAIL,
                0,
                30,
                "22 of 30 concurrent requests were admitted",
                {
                    "expected": "at most 20 allowed",
                    "actual": {"allowed": 22},
                    "request": 'POST /v1/check\n\n{"key": "k|1", "cost": 1}',
                    "response": "HTTP/1.1 200\n\n```evil fence``` | pipe",
                    "curl": CURL,
                    "key": "k|1",
                },
            ),
            Check("load.p99", "p99 under 10 ms", Status.FAIL, 0, 10, "p99 was 31 ms"),
        ],
        metrics={
            "load.p99_ms": 31.4159,
            "accuracy.over_admitted": 2,
            "load.requests": 82000,
            "x": None,
        },
        faults=[
            FaultOutcome("redis", "restart", 12.0, 14.1, "errors | 5xx for 2.1 s"),
            FaultOutcome("postgres", "pause", 30.0, None, "no effect"),
        ],
        architecture=Architecture(
            ["redis"],
            {
                "redis": {
                    "commands": {"evalsha": 41200, "get": 10},
                    "ops_per_request": 1.0,
                    "keys": 9876,
                }
            },
        ),
        discussion="### Trade-offs\n\nYour design used **Redis** counters.",
    )


def _passing() -> Report:
    return Report(
        challenge="url-shortener",
        target="http://127.0.0.1:9000",
        environment=None,
        seed=7,
        score=100,
        passed=True,
        duration_s=30.0,
        checks=[Check("contract.create", "Create a link", Status.PASS, 10, 10)],
    )


def _tables(md: str) -> list[list[str]]:
    """Table rows, split on unescaped pipes."""
    return [re.split(r"(?<!\\)\|", line)[1:-1] for line in md.splitlines() if line.startswith("|")]


def test_failing_report_calls_out_first_broken_invariant_with_evidence():
    md = render_markdown(_failing(), statement_title="Design a rate limiter")
    assert md.startswith("# Design a rate limiter: 62/100, FAILED\n")
    assert "**Seed** 1234" in md and "41.2 s" in md and "env-7f3a" in md
    first = md.index("## First broken invariant: Concurrent burst stays within the limit")
    assert first < md.index("## Score card")
    assert "p99 was 31 ms" not in md[first : md.index("## Score card")]
    assert f"```sh\n{CURL}\n```" in md
    assert "**Expected**\n\n```\nat most 20 allowed\n```" in md
    assert '"allowed": 22' in md
    # a response holding a ``` fence gets a longer fence around it
    assert "````http\nHTTP/1.1 200\n\n```evil fence``` | pipe\n````" in md
    assert '"key": "k|1"' in md  # other evidence, as JSON
    assert md.rstrip().endswith("Your design used **Redis** counters.")


def test_tables_are_well_formed():
    md = render_markdown(_failing())
    rows = _tables(md)
    widths = {len(r) for r in rows}
    assert widths == {2, 3, 4}  # metrics, score card, faults: no stray pipes
    assert "| FAIL | 0 / 30 |" in md and "| PASS | 10 / 10 |" in md
    assert "**10 / 50**" in md
    assert "| `load.p99_ms` | 31.4 |" in md and "| `load.requests` | 82,000 |" in md
    assert "| `x` | n/a |" in md
    assert "| redis restart | 12.0 s | 14.1 s (after 2.1 s) | errors \\| 5xx for 2.1 s |" in md
    assert "| postgres pause | 30.0 s | never | no effect |" in md
    assert "Resources your service used under load: redis." in md
    assert "- commands: evalsha 41,200, get 10" in md


def test_passing_report():
    md = render_markdown(_passing())
    assert md.startswith("# url-shortener: 100/100, PASSED\n")
    assert "Every check passed." in md and "First broken" not in md
    assert "Environment" not in md and "## Faults" not in md and "## Discussion" not in md
    assert "No provisioned resource showed activity under load." in md


def test_scorecard_short_and_bounded():
    card = render_scorecard(_failing())
    assert card.startswith("**rate-limiter**: 62/100, FAILED")
    assert card.index("FAIL Concurrent") < card.index("PASS Allow")
    assert "First broken: **Concurrent burst stays within the limit**" in card
    assert "load.p99_ms 31.4" in card and "Used: redis" in card
    big = _failing()
    big.checks += [
        Check(f"c.{i}", f"A rather long check title number {i} " * 3, Status.PASS, 1, 1)
        for i in range(80)
    ]
    card = render_scorecard(big)
    assert len(card) <= SCORECARD_MAX_CHARS
    assert "more" in card and "FAIL Concurrent" in card
    assert render_scorecard(_passing()).count("\n") <= 3


def test_escaping_helpers():
    assert cell("a|b\nc") == "a\\|b c"
    assert inline("*bold* [x](y) <b> `c` snake_case _x_") == (
        "\\*bold\\* \\[x\\](y) \\<b\\> \\`c\\` snake_case \\_x\\_"
    )
    assert inline("# title") == "\\# title"
    assert codeblock("a ```` b", "sh") == "`````sh\na ```` b\n`````"


def test_learner_strings_cannot_break_the_report():
    r = _failing()
    r.target = "http://x/|`\n# injected"
    r.checks[0].title = "title | with pipe\nand newline"
    md = render_markdown(r)
    assert "\n# injected" not in md
    assert "title \\| with pipe and newline" in md
    assert {len(row) for row in _tables(md)} == {2, 3, 4}


def test_write_report_with_and_without_timeline(tmp_path):
    r = _failing()
    tl = Timeline(1.0, [Bucket(float(s), 100, 99, {"5xx": 1}, 1.0, 3.0, 9.0) for s in range(20)])
    paths = write_report(r, tmp_path / "out", tl, threshold_ms=10)
    assert [p.name for p in paths] == ["latency.png", "report.md", "report.json"]
    assert all(p.exists() and p.stat().st_size > 0 for p in paths)
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert data["schema"] == 1 and data["artifacts"] == ["latency.png"]
    assert "](latency.png)" in (tmp_path / "out" / "report.md").read_text()
    write_report(r, tmp_path / "out", tl)
    assert r.artifacts == ["latency.png"]  # not duplicated

    p = _passing()
    paths = write_report(p, tmp_path / "plain")
    assert [x.name for x in paths] == ["report.md", "report.json"]
    assert "latency.png" not in (tmp_path / "plain" / "report.md").read_text()
