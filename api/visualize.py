"""Text drawings of a step graph for terminals (GET .../visualize): pure functions from
steps to text, no I/O.

Steps are drawn by dependency level, the way they can run: level 1 holds the steps that
depend on nothing, level n the steps whose deepest dependency is on level n-1. A level
with several steps is where branches run concurrently; a step listing several
dependencies (`<- a, b`) is a join. Only ASCII is used, and text that came from users or
plugins is stripped of control characters, so a drawing cannot move the cursor or
recolour a terminal.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from domain.run import StepStatus

MARKERS = {
    StepStatus.SUCCEEDED: "[+]",
    StepStatus.FAILED: "[x]",
    StepStatus.RUNNING: "[>]",
    StepStatus.RETRYING: "[~]",
    StepStatus.PENDING: "[ ]",
    StepStatus.SKIPPED: "[-]",
    StepStatus.CANCELLED: "[!]",
}
DEPENDS = "<- runs after"
RUN_LEGEND = "  ".join([*(f"{marker} {status}" for status, marker in MARKERS.items()), DEPENDS])
DEFINITION_MARKER = "[*]"
PIPELINE_LEGEND = f"{DEFINITION_MARKER} step  {DEPENDS}"
NAME_WIDTH, PLUGIN_WIDTH = 40, 32
MAX_DEPENDENCIES_SHOWN = 8
MAX_ERROR = 160
_WITH_ERROR = (StepStatus.FAILED, StepStatus.RETRYING, StepStatus.SKIPPED, StepStatus.CANCELLED)


@dataclass(frozen=True)
class StepNode:
    """A step as drawn. `status` is None for a pipeline's step (a definition has no
    state); a run's step carries its state, times and attempts."""

    name: str
    plugin: str
    depends_on: tuple[str, ...] = ()
    status: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: int = 0
    error: str | None = None


@dataclass(frozen=True)
class RunHeader:
    run_id: str
    pipeline_name: str
    revision: int
    status: str
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None


def dependency_levels(steps: Sequence[StepNode]) -> tuple[list[list[StepNode]], list[StepNode]]:
    """The steps grouped by level (definition order within a level), and apart the steps
    no order exists for: those in a dependency cycle or after one. A valid definition has
    none, but a drawing must not fail on (or silently drop) what it is given. Unknown
    dependencies are ignored for ordering; repeated names count their first step."""
    first_index: dict[str, int] = {}
    for index, step in enumerate(steps):
        first_index.setdefault(step.name, index)
    deps = [{first_index[d] for d in step.depends_on if d in first_index} for step in steps]
    dependents: list[list[int]] = [[] for _ in steps]
    for index, upstream in enumerate(deps):
        for parent in upstream:
            dependents[parent].append(index)
    waiting = [len(upstream) for upstream in deps]
    level = [0] * len(steps)
    # Kahn's algorithm, iteratively: a 500-step chain must not recurse 500 deep.
    ready = [index for index, count in enumerate(waiting) if count == 0]
    placed: list[int] = []
    while ready:
        index = ready.pop()
        placed.append(index)
        for child in dependents[index]:
            level[child] = max(level[child], level[index] + 1)
            waiting[child] -= 1
            if waiting[child] == 0:
                ready.append(child)
    levels: list[list[StepNode]] = [
        [] for _ in range(max((level[i] for i in placed), default=-1) + 1)
    ]
    for index in sorted(placed):
        levels[level[index]].append(steps[index])
    done = set(placed)
    unordered = [step for index, step in enumerate(steps) if index not in done]
    return levels, unordered


def render_pipeline(name: str, revision: int, steps: Sequence[StepNode]) -> str:
    levels, unordered = dependency_levels(steps)
    header = [
        f'pipeline "{clean(name, 200)}" revision {revision}: '
        f"{_count(len(steps), 'step')} in {_count(len(levels), 'level')}"
    ]
    return _render(header, levels, unordered, None, PIPELINE_LEGEND)


def render_run(run: RunHeader, steps: Sequence[StepNode], now: datetime) -> str:
    """`now` times what is still running (a pure function reads no clock)."""
    levels, unordered = dependency_levels(steps)
    duration = format_duration(_elapsed_ms(run.started_at, run.finished_at, now))
    header = [
        f'run {run.run_id} of pipeline "{clean(run.pipeline_name, 200)}" revision {run.revision}',
        f"status: {clean(run.status, 20)}"
        + (f"   duration: {duration}" if duration else "")
        + f"   steps: {_status_counts(steps)}",
    ]
    if run.error:
        header.append(f"error: {clean(run.error, MAX_ERROR)}")
    return _render(header, levels, unordered, now, RUN_LEGEND)


def clean(text: str, limit: int) -> str:
    """One line of at most `limit` characters, control and format characters (escape
    sequences, newlines, bidirectional overrides) replaced by spaces."""
    flat = "".join(
        " " if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") else ch for ch in text
    )
    flat = " ".join(flat.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _status_counts(steps: Sequence[StepNode]) -> str:
    by_status: dict[str, int] = {}
    for step in steps:
        status = step.status or StepStatus.PENDING
        by_status[status] = by_status.get(status, 0) + 1
    order = [s for s in MARKERS if s in by_status] + sorted(set(by_status) - set(MARKERS))
    return ", ".join(f"{by_status[s]} {clean(s, 20)}" for s in order) or "none"


def _render(
    header: list[str],
    levels: list[list[StepNode]],
    unordered: list[StepNode],
    now: datetime | None,
    legend: str,
) -> str:
    everything = [step for level in levels for step in level] + unordered
    if not everything:
        return "\n".join([*header, "", "(no steps)"]) + "\n"
    name_width = min(max(len(s.name) for s in everything), NAME_WIDTH)
    plugin_width = min(max(len(s.plugin) for s in everything), PLUGIN_WIDTH)
    lines = [*header]
    sections = [(f"level {n}", level) for n, level in enumerate(levels, start=1)]
    if unordered:
        sections.append(("unordered (in or after a dependency cycle)", unordered))
    for title, level_steps in sections:
        branches = f" ({len(level_steps)} in parallel)" if len(level_steps) > 1 else ""
        lines += ["", f"{title}{branches}"]
        for step in level_steps:
            lines += _step_lines(step, name_width, plugin_width, now)
    lines += ["", f"legend: {legend}"]
    return "\n".join(lines) + "\n"


def _step_lines(
    step: StepNode, name_width: int, plugin_width: int, now: datetime | None
) -> list[str]:
    name = clean(step.name, 200).ljust(name_width)
    plugin = clean(step.plugin, 200).ljust(plugin_width)
    columns = [name, plugin]
    if step.status is None:
        marker = DEFINITION_MARKER
    else:
        marker = MARKERS.get(step.status, "[?]")
        elapsed = _elapsed_ms(step.started_at, step.finished_at, now)
        columns += [clean(step.status, 20).ljust(9), format_duration(elapsed).rjust(7)]
    line = f"  {marker} " + "  ".join(columns)
    if step.depends_on:
        line += f"  <- {_dependency_list(step.depends_on)}"
    if step.attempts > 1:
        line += f"  ({step.attempts} attempts)"
    lines = [line.rstrip()]
    if step.error and step.status in _WITH_ERROR:
        label = "reason" if step.status == StepStatus.SKIPPED else "error"
        lines.append(f"        {label}: {clean(step.error, MAX_ERROR)}")
    return lines


def _dependency_list(names: tuple[str, ...]) -> str:
    shown = [clean(n, 100) for n in names[:MAX_DEPENDENCIES_SHOWN]]
    more = len(names) - len(shown)
    return ", ".join(shown) + (f" (+{more} more)" if more > 0 else "")


def _elapsed_ms(start: datetime | None, end: datetime | None, now: datetime | None) -> float | None:
    if start is None:
        return None
    stop = end or now
    if stop is None:
        return None
    return max((stop - start).total_seconds() * 1000, 0.0)


def format_duration(ms: float | None) -> str:
    if ms is None:
        return ""
    if ms < 1000:
        return f"{ms:.0f}ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
