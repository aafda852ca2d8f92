"""The grade report as markdown (jinja2 templates in ``grading/templates``) and on disk.

Templates render with autoescape off (this is markdown, not HTML); learner-controlled
text goes through the ``cell``, ``inline`` and ``codeblock`` filters so it can break
neither a table nor a code fence.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from grading.network import CHECK_ID as NETWORK_CHECK
from grading.plots import grade_plot
from grading.report import Check, Report, Status
from grading.timeline import Timeline

SCORECARD_MAX_CHARS = 1500
PLOT_NAME = "latency.png"
_EVIDENCE_KEYS = ("expected", "actual", "request", "response", "curl")
_INLINE_SPECIAL = re.compile(r"([\\`*\[\]<>|~])|(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")


def cell(value: Any) -> str:
    """Text safe inside a markdown table cell: one line, pipes escaped."""
    text = _text(value)
    return " ".join(text.split()).replace("\\", "\\\\").replace("|", "\\|")


def inline(value: Any) -> str:
    """Text safe as inline markdown: emphasis, links, code, HTML and headings neutralised."""
    text = _INLINE_SPECIAL.sub(lambda m: "\\" + m.group(0), " ".join(_text(value).split()))
    return "\\" + text if text.startswith(("#", "-", "+", ">")) else text


def prose(value: Any) -> str:
    """Grader-written markdown kept as is, but unable to open a code fence or raw HTML."""
    return _text(value).replace("```", "\\`\\`\\`").replace("~~~", "\\~\\~\\~").replace("<", "&lt;")


def codeblock(value: Any, lang: str = "") -> str:
    """A fenced block whose fence is longer than any backtick run inside the text."""
    text = _text(value).rstrip("\n")
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{text}\n{fence}"


def number(value: Any) -> str:
    """A metric value for people: thousands separators, a few significant digits."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return f"{int(value):,}"
        return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} s"


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, sort_keys=True, default=str)


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _signal_lines(signals: dict[str, Any]) -> dict[str, list[str]]:
    """Per resource, short ``name: value`` lines; nested dicts show their largest entries."""
    out: dict[str, list[str]] = {}
    for resource, data in signals.items():
        if not isinstance(data, dict):
            out[resource] = [_text(data)]
            continue
        lines = []
        for name, value in data.items():
            if isinstance(value, dict):
                top = sorted(
                    ((k, v) for k, v in value.items() if isinstance(v, int | float)),
                    key=lambda kv: -kv[1],
                )[:5]
                nested = [k for k, v in value.items() if isinstance(v, dict)][:5]
                parts = [f"{k} {number(v)}" for k, v in top] or nested
                more = len(value) - len(parts)
                lines.append(
                    f"{name}: {', '.join(parts)}" + (f" (+{more} more)" if more > 0 else "")
                )
            elif isinstance(value, list):
                lines.append(f"{name}: {len(value)} entries")
            else:
                lines.append(f"{name}: {number(value)}")
        out[resource] = lines
    return out


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(Path(__file__).with_name("templates")),
        autoescape=False,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        cell=cell,
        inline=inline,
        prose=prose,
        codeblock=codeblock,
        number=number,
        seconds=seconds,
        truncate_text=_truncate,
    )
    return env


_JINJA = _environment()


def _context(report: Report, statement_title: str | None) -> dict[str, Any]:
    failure = report.first_failure()
    evidence = failure.evidence if failure else {}
    return {
        "r": report,
        "title": statement_title or report.challenge,
        "verdict": "PASSED" if report.passed else "FAILED",
        "failure": failure,
        "shown": {k: evidence[k] for k in _EVIDENCE_KEYS if evidence.get(k) not in (None, "")},
        "other_evidence": {k: v for k, v in evidence.items() if k not in _EVIDENCE_KEYS},
        "status": lambda c: c.status.value.upper(),
        "earned": sum(c.points for c in report.checks),
        "possible": sum(c.max_points for c in report.checks),
        "signals": _signal_lines(report.architecture.signals),
        "plot": PLOT_NAME if PLOT_NAME in report.artifacts else None,
        "headline_metrics": list(report.metrics.items())[:4],
        # a remote target: the round trip, and which thresholds were judged net of it
        "network": next((c for c in report.checks if c.id == NETWORK_CHECK), None),
    }


def render_markdown(report: Report, *, statement_title: str | None = None) -> str:
    """The full report a learner reads (markdown)."""
    return _JINJA.get_template("report.md.j2").render(**_context(report, statement_title))


def _scorecard_checks(report: Report) -> list[Check]:
    """Failures and errors first, then warnings, then the rest, each in report order."""
    rank = {Status.FAIL: 0, Status.ERROR: 0, Status.WARN: 1}
    return sorted(report.checks, key=lambda c: rank.get(c.status, 2))


def render_scorecard(report: Report, *, statement_title: str | None = None) -> str:
    """A short score card for a channel post (at most ``SCORECARD_MAX_CHARS``)."""
    template = _JINJA.get_template("scorecard.md.j2")
    checks = _scorecard_checks(report)
    for shown in range(len(checks), -1, -1):
        text = template.render(
            **_context(report, statement_title), checks=checks[:shown], hidden=len(checks) - shown
        )
        if len(text) <= SCORECARD_MAX_CHARS:
            return text
    return _truncate(text, SCORECARD_MAX_CHARS)


def write_report(
    report: Report,
    out_dir: Path,
    timeline: Timeline | None = None,
    *,
    threshold_ms: float | None = None,
    statement_title: str | None = None,
) -> list[Path]:
    """Write the plot (when there is a timeline), report.md and report.json into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if timeline is not None:
        title = f"{statement_title or report.challenge} — {report.target}"
        written.append(
            grade_plot(timeline, report.faults, out_dir / PLOT_NAME, title, threshold_ms)
        )
        if PLOT_NAME not in report.artifacts:
            report.artifacts.append(PLOT_NAME)
    md = out_dir / "report.md"
    md.write_text(render_markdown(report, statement_title=statement_title))
    written.append(md)
    written.append(report.write_json(out_dir / "report.json"))
    return written
