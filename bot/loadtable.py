"""The terminal's view of a load run (``cruscible load``): a rich table of its figures."""

from __future__ import annotations

from rich.table import Table

from grading.load import LoadResult


def format_table(result: LoadResult) -> Table:
    """A rich table of rates, errors by kind and latency percentiles (corrected and raw)."""
    table = Table(title="Load result", show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("corrected", justify="right")
    table.add_column("raw", justify="right")
    table.add_row(
        "rate",
        f"{result.achieved_rate:,.1f}/s achieved",
        f"{result.target_rate:,.1f}/s target",
    )
    table.add_row("requests", f"{result.scheduled:,} scheduled", f"{result.sent:,} sent")
    table.add_row("ok", f"{result.ok:,}", f"{1 - result.error_rate:.2%}")
    for kind, count in sorted(result.errors.items(), key=lambda kv: -kv[1]):
        table.add_row(f"error: {kind}", f"{count:,}", f"{count / max(1, result.scheduled):.2%}")
    for q in (50, 90, 99, 99.9):
        table.add_row(
            f"p{q:g}",
            f"{result.percentile_ms(q):,.2f} ms",
            f"{result.percentile_ms(q, corrected=False):,.2f} ms",
        )
    table.add_row(
        "max",
        f"{result.corrected.get_max_value() / 1000:,.2f} ms",
        f"{result.raw.get_max_value() / 1000:,.2f} ms",
    )
    table.add_row(
        "generator lag", f"p99 {result.lag_p99_ms:.2f} ms", f"max {result.max_lag_ms:.2f} ms"
    )
    if result.unreliable:
        table.caption = f"[yellow]unreliable: {result.unreliable_reason}[/yellow]"
    return table
