"""The geometry of the run statistics charts, drawn as inline SVG by run_stats.html:
server-side, no script, nothing to load. Numbers in, coordinates out (in the SVG's
viewBox units; the SVG scales to its container's width). Outcomes are told apart by
pattern and by legend label as well as by colour, and each bar and point carries its
numbers as a <title>; the page's table has them all."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from projections.run_statistics import RunCounts

WIDTH, HEIGHT = 640, 240
LEFT, RIGHT, TOP, BOTTOM = 64, 8, 12, 28
X_LABELS = 6
OUTCOMES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("succeeded", "succeeded", ("succeeded",)),
    ("failed", "failed, timed out or crashed", ("failed", "timed_out", "crashed")),
    ("cancelled", "cancelled", ("cancelled",)),
    ("active", "queued or running", ("queued", "running")),
)
"""(key, legend label, statuses): the bars' stacks, bottom first."""


@dataclass
class Tick:
    y: float
    label: str


@dataclass
class Segment:
    key: str
    y: float
    height: float
    count: int


@dataclass
class Bar:
    x: float
    width: float
    title: str
    segments: list[Segment] = field(default_factory=list)


@dataclass
class Series:
    key: str
    label: str
    points: list[tuple[float, float, str]]
    """(x, y, title) of each bucket with a value."""
    lines: list[str]
    """SVG polyline `points` attributes: a line breaks where a bucket has no value."""


@dataclass
class Chart:
    ticks: list[Tick]
    x_labels: list[tuple[float, str]]
    bars: list[Bar] = field(default_factory=list)
    series: list[Series] = field(default_factory=list)
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    right: int = WIDTH - RIGHT
    bottom: int = HEIGHT - BOTTOM


def outcome_counts(counts: RunCounts) -> dict[str, int]:
    return {key: sum(counts.by_status[s] for s in statuses) for key, _, statuses in OUTCOMES}


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten at or above `value` (1 for 0):
    an axis maximum whose halves and quarters read well."""
    if value <= 0:
        return 1
    power = 10 ** math.floor(math.log10(value))
    return next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= value)


def _y(value: float, top: float) -> float:
    plot = HEIGHT - BOTTOM - TOP
    return HEIGHT - BOTTOM - plot * value / top


def _ticks(top: float, label: Callable[[float], str]) -> list[Tick]:
    return [Tick(_y(top * q / 4, top), label(top * q / 4)) for q in range(5)]


def _slots(labels: Sequence[str]) -> tuple[float, list[tuple[float, str]]]:
    """Each bucket's slot width, and the x labels (about X_LABELS of them, evenly)."""
    slot = (WIDTH - LEFT - RIGHT) / max(len(labels), 1)
    every = max(1, math.ceil(len(labels) / X_LABELS))
    shown = [(LEFT + slot * (i + 0.5), text) for i, text in enumerate(labels) if i % every == 0]
    return slot, shown


def bar_chart(labels: Sequence[str], counts: Sequence[RunCounts]) -> Chart:
    """Runs per bucket, stacked by outcome."""
    slot, x_labels = _slots(labels)
    per_bucket = [outcome_counts(c) for c in counts]
    top = nice_ceiling(max((c.total for c in counts), default=0))
    chart = Chart(_ticks(top, lambda v: f"{v:g}"), x_labels)
    for i, (label, outcomes) in enumerate(zip(labels, per_bucket, strict=True)):
        parts = ", ".join(f"{n} {key}" for key, n in outcomes.items() if n) or "no runs"
        bar = Bar(LEFT + slot * i + slot * 0.15, slot * 0.7, f"{label}: {parts}")
        base = 0
        for key, n in outcomes.items():
            if n:
                y = _y(base + n, top)
                bar.segments.append(Segment(key, y, _y(base, top) - y, n))
                base += n
        chart.bars.append(bar)
    return chart


def line_chart(
    labels: Sequence[str],
    series: Sequence[tuple[str, str, Sequence[float | None]]],
    label: Callable[[float], str],
) -> Chart:
    """One line per (key, legend label, value per bucket); None leaves a gap."""
    slot, x_labels = _slots(labels)
    values = [v for _, _, vs in series for v in vs if v is not None]
    top = nice_ceiling(max(values, default=0))
    chart = Chart(_ticks(top, label), x_labels)
    for key, name, vs in series:
        points: list[tuple[float, float, str]] = []
        lines: list[str] = []
        run: list[str] = []
        for i, value in enumerate(vs):
            if value is None:
                lines += [" ".join(run)] if run else []
                run = []
                continue
            x, y = LEFT + slot * (i + 0.5), _y(value, top)
            points.append((x, y, f"{labels[i]}: {name} {label(value)}"))
            run.append(f"{x:.1f},{y:.1f}")
        lines += [" ".join(run)] if run else []
        chart.series.append(Series(key, name, points, lines))
    return chart
