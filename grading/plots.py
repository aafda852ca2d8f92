"""PNG plots of a load run: latency, throughput and errors over time, fault windows shaded.

Figures are built with matplotlib's object API on the Agg canvas: no display, no pyplot
global state, safe to call from worker threads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from grading.report import FaultOutcome
from grading.timeline import Timeline

_FAULT_COLORS = ("#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")
_ERROR_COLORS = ("#d62728", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf")
_MIN_MS = 0.01  # latencies are drawn on a log axis: clamp 0 to something positive


def _series(values: Sequence[float | None]) -> list[float]:
    return [math.nan if v is None else max(v, _MIN_MS) for v in values]


def _end_s(timeline: Timeline, faults: Sequence[FaultOutcome]) -> float:
    ends = [b.t_s + timeline.bucket_s for b in timeline.buckets]
    ends += [f.healed_at_s if f.healed_at_s is not None else f.at_s for f in faults]
    return max(ends, default=1.0)


def _shade_faults(ax: Axes, faults: Sequence[FaultOutcome], end_s: float, *, label: bool) -> None:
    """Shade each fault from ``at_s`` to ``healed_at_s`` (or the end if it never healed)."""
    colors: dict[str, str] = {}
    for fault in faults:
        name = f"{fault.resource} {fault.action}"
        color = colors.setdefault(name, _FAULT_COLORS[len(colors) % len(_FAULT_COLORS)])
        healed = fault.healed_at_s if fault.healed_at_s is not None else end_s
        ax.axvspan(
            fault.at_s,
            max(healed, fault.at_s + 0.05),
            color=color,
            alpha=0.15,
            label=name if label and name not in ax.get_legend_handles_labels()[1] else None,
        )


def _no_data(ax: Axes) -> None:
    ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="gray")


def _mid(timeline: Timeline) -> list[float]:
    """Bucket midpoints: where a bucket's line point sits (its bar spans the whole bucket)."""
    return [b.t_s + timeline.bucket_s / 2 for b in timeline.buckets]


def _latency_panel(
    ax: Axes, timeline: Timeline, faults: Sequence[FaultOutcome], threshold_ms: float | None
) -> None:
    t = _mid(timeline)
    drawn = False
    for attr, label, style in (
        ("max_ms", "max", {"color": "#bbbbbb", "linewidth": 1.0}),
        ("p99_ms", "p99", {"color": "#ff7f0e", "linewidth": 1.6}),
        ("p50_ms", "p50", {"color": "#1f77b4", "linewidth": 1.6}),
    ):
        values = [getattr(b, attr) for b in timeline.buckets]
        if any(v is not None for v in values):
            ax.plot(t, _series(values), label=label, marker=".", markersize=3, **style)
            drawn = True
    if threshold_ms is not None:
        ax.axhline(threshold_ms, color="black", linestyle="--", linewidth=1.0)
        ax.annotate(
            f"threshold {threshold_ms:g} ms",
            xy=(0.0, threshold_ms),
            xycoords=("axes fraction", "data"),
            xytext=(4, 3),
            textcoords="offset points",
            fontsize=8,
        )
    if drawn or threshold_ms is not None:
        ax.set_yscale("log")
    if not drawn:
        _no_data(ax)
    _shade_faults(ax, faults, _end_s(timeline, faults), label=True)
    ax.set_ylabel("latency (ms)")
    ax.grid(True, which="major", alpha=0.3)


def _throughput_panel(ax: Axes, timeline: Timeline, faults: Sequence[FaultOutcome]) -> None:
    per_s = 1.0 / timeline.bucket_s
    t = _mid(timeline)
    sent = [b.sent * per_s for b in timeline.buckets]
    if timeline.buckets:
        ax.plot(t, [b.ok * per_s for b in timeline.buckets], label="ok", color="#2ca02c")
        ax.plot(t, sent, label="sent", color="#444444", linestyle="--", linewidth=1.0)
    else:
        _no_data(ax)
    _shade_faults(ax, faults, _end_s(timeline, faults), label=False)
    ax.set_ylabel("requests/s")
    ax.set_ylim(0, max(sent, default=0) * 1.15 or 1)
    ax.grid(True, alpha=0.3)


def _steps(timeline: Timeline) -> tuple[list[float], list[int | None]]:
    """Stair edges over the buckets, with a ``None`` slot wherever buckets leave a gap."""
    edges: list[float] = []
    slots: list[int | None] = []
    for i, b in enumerate(timeline.buckets):
        if edges and b.t_s > edges[-1] + 1e-9:
            slots.append(None)
            edges.append(b.t_s)
        elif not edges:
            edges.append(b.t_s)
        slots.append(i)
        edges.append(b.t_s + timeline.bucket_s)
    return edges, slots


def _errors_panel(ax: Axes, timeline: Timeline, faults: Sequence[FaultOutcome]) -> None:
    """Errors per second by kind, stacked as filled stairs (one artist per kind: fast)."""
    per_s = 1.0 / timeline.bucket_s
    kinds = sorted({k for b in timeline.buckets for k in b.errors})
    edges, slots = _steps(timeline)
    bottom = [0.0] * len(slots)
    for i, kind in enumerate(kinds):
        top = [
            base + (0 if j is None else timeline.buckets[j].errors.get(kind, 0) * per_s)
            for base, j in zip(bottom, slots, strict=True)
        ]
        ax.stairs(
            top,
            edges,
            baseline=bottom,
            fill=True,
            label=kind,
            color=_ERROR_COLORS[i % len(_ERROR_COLORS)],
        )
        bottom = top
    if not kinds:
        ax.text(
            0.5, 0.5, "no errors", transform=ax.transAxes, ha="center", va="center", color="gray"
        )
    _shade_faults(ax, faults, _end_s(timeline, faults), label=False)
    ax.set_ylabel("errors/s")
    ax.set_ylim(0, max(bottom, default=0) * 1.15 or 1)
    ax.grid(True, alpha=0.3)


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png", dpi=100)
    return path


def latency_plot(
    timeline: Timeline,
    faults: list[FaultOutcome],
    path: Path,
    title: str,
    threshold_ms: float | None = None,
) -> Path:
    """p50/p99/max latency per bucket (log scale), faults shaded, optional threshold line."""
    fig = Figure(figsize=(10, 4), layout="constrained")
    ax = fig.add_subplot()
    _latency_panel(ax, timeline, faults, threshold_ms)
    ax.set_title(title)
    ax.set_xlabel("time since load start (s)")
    ax.set_xlim(0, _end_s(timeline, faults))
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper right", fontsize=8)
    return _save(fig, path)


def grade_plot(
    timeline: Timeline,
    faults: list[FaultOutcome],
    path: Path,
    title: str,
    threshold_ms: float | None = None,
) -> Path:
    """Three stacked panels sharing the time axis: latency, throughput (sent vs ok), errors."""
    fig = Figure(figsize=(10, 8), layout="constrained")
    lat, thr, err = fig.subplots(3, 1, sharex=True, height_ratios=(2, 1, 1))
    _latency_panel(lat, timeline, faults, threshold_ms)
    _throughput_panel(thr, timeline, faults)
    _errors_panel(err, timeline, faults)
    lat.set_title(title)
    err.set_xlabel("time since load start (s)")
    err.set_xlim(0, _end_s(timeline, faults))
    for ax in (lat, thr, err):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper right", fontsize=8)
    return _save(fig, path)
