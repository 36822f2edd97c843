"""The text drawing of step graphs (api/visualize.py): levels, branches and joins,
run states and durations, hostile text, and sizes from 1 to 500 steps. No I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from api.visualize import (
    MARKERS,
    RunHeader,
    StepNode,
    clean,
    dependency_levels,
    format_duration,
    render_pipeline,
    render_run,
)

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def names(levels: list[list[StepNode]]) -> list[list[str]]:
    return [[step.name for step in level] for level in levels]


def step_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("  [")]


def section(text: str, title: str) -> list[str]:
    """The step lines under the section whose heading starts with `title`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    body = []
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        body.append(line)
    return body


DIAMOND = [
    StepNode("read", "Input.file"),
    StepNode("clean", "Data_Processing.filter", ("read",)),
    StepNode("enrich", "Data_Processing.transform", ("read",)),
    StepNode("write", "Output.file", ("clean", "enrich")),
]


def test_one_step() -> None:
    text = render_pipeline("solo", 1, [StepNode("only", "Test.emit")])
    assert text.splitlines()[0] == 'pipeline "solo" revision 1: 1 step in 1 level'
    assert section(text, "level 1") == ["  [*] only  Test.emit"]
    assert "level 2" not in text and "<- " not in step_lines(text)[0]


def test_a_diamond_shows_the_branches_on_one_level_and_the_join_with_both_dependencies() -> None:
    levels, unordered = dependency_levels(DIAMOND)
    assert names(levels) == [["read"], ["clean", "enrich"], ["write"]] and unordered == []
    text = render_pipeline("etl", 3, DIAMOND)
    assert text.splitlines()[0] == 'pipeline "etl" revision 3: 4 steps in 3 levels'
    assert "level 2 (2 in parallel)" in text
    assert section(text, "level 3") == ["  [*] write   Output.file                <- clean, enrich"]
    assert section(text, "level 2")[0].endswith("Data_Processing.filter     <- read")


def test_a_step_sits_one_level_below_its_deepest_dependency() -> None:
    steps = [
        StepNode("c", "P", ("a", "b")),  # listed first: order in the definition is no level
        StepNode("a", "P"),
        StepNode("b", "P", ("a",)),
    ]
    levels, _ = dependency_levels(steps)
    assert names(levels) == [["a"], ["b"], ["c"]]


def test_steps_keep_their_definition_order_within_a_level() -> None:
    steps = [StepNode("root", "P")] + [StepNode(f"s{i}", "P", ("root",)) for i in (3, 1, 2)]
    levels, _ = dependency_levels(steps)
    assert names(levels)[1] == ["s3", "s1", "s2"]


def test_columns_line_up() -> None:
    text = render_pipeline("etl", 1, DIAMOND)
    lines = step_lines(text)
    plugin_columns = {
        line.index(step.plugin) for line, step in zip(lines, _in_levels(DIAMOND), strict=True)
    }
    arrows = {line.index("<-") for line in lines if "<-" in line}
    assert len(plugin_columns) == 1 and len(arrows) == 1


def _in_levels(steps: list[StepNode]) -> list[StepNode]:
    levels, unordered = dependency_levels(steps)
    return [s for level in levels for s in level] + unordered


def test_a_500_step_chain_draws_500_levels_without_deep_recursion() -> None:
    chain = [StepNode("s0", "Test.emit")] + [
        StepNode(f"s{i}", "Test.emit", (f"s{i - 1}",)) for i in range(1, 500)
    ]
    levels, unordered = dependency_levels(chain)
    assert names(levels) == [[f"s{i}"] for i in range(500)] and not unordered
    text = render_pipeline("long", 2, chain)
    assert "500 steps in 500 levels" in text.splitlines()[0]
    assert section(text, "level 500") == ["  [*] s499  Test.emit  <- s498"]
    assert len(step_lines(text)) == 500


def test_a_500_step_fan_out_and_join() -> None:
    middle = [StepNode(f"branch{i}", "Test.emit", ("start",)) for i in range(498)]
    steps = [StepNode("start", "Test.emit"), *middle]
    steps.append(StepNode("join", "Test.emit", tuple(s.name for s in middle)))
    text = render_pipeline("wide", 1, steps)
    assert "500 steps in 3 levels" in text and "level 2 (498 in parallel)" in text
    join = section(text, "level 3")[0]
    # A 498-way join names a few dependencies and counts the rest, on one line.
    assert join.endswith(
        "<- branch0, branch1, branch2, branch3, branch4, branch5, branch6, branch7 (+490 more)"
    )
    assert len(step_lines(text)) == 500


def test_a_cycle_or_unknown_dependency_is_drawn_not_dropped() -> None:
    steps = [
        StepNode("a", "P"),
        StepNode("b", "P", ("c",)),
        StepNode("c", "P", ("b",)),
        StepNode("d", "P", ("c",)),
        StepNode("e", "P", ("ghost",)),
    ]
    levels, unordered = dependency_levels(steps)
    assert names(levels) == [["a", "e"]]
    assert [s.name for s in unordered] == ["b", "c", "d"]
    text = render_pipeline("odd", 1, steps)
    assert len(step_lines(text)) == 5
    assert "unordered (in or after a dependency cycle)" in text
    assert "<- ghost" in text


def test_no_steps() -> None:
    assert render_pipeline("empty", 1, []).splitlines()[-1] == "(no steps)"


def test_a_run_shows_each_steps_state_duration_attempts_and_error() -> None:
    steps = [
        StepNode("read", "Input.file", (), "succeeded", T0, T0 + timedelta(seconds=1.25), 1),
        StepNode("clean", "Data_Processing.filter", ("read",), "succeeded", T0, T0 + _ms(301), 1),
        StepNode(
            "enrich",
            "Data_Processing.transform",
            ("read",),
            "failed",
            T0,
            T0 + _ms(120),
            3,
            "boom",
        ),
        StepNode("write", "Output.file", ("clean", "enrich"), "skipped", error="enrich failed"),
    ]
    header = RunHeader("r-1", "etl", 3, "failed", T0, T0 + timedelta(seconds=12.3), "enrich: boom")
    text = render_run(header, steps, now=T0 + timedelta(hours=1))
    lines = text.splitlines()
    assert lines[0] == 'run r-1 of pipeline "etl" revision 3'
    assert lines[1] == "status: failed   duration: 12.3s   steps: 2 succeeded, 1 failed, 1 skipped"
    assert lines[2] == "error: enrich: boom"
    assert section(text, "level 1") == [
        "  [+] read    Input.file                 succeeded     1.2s"
    ]
    assert section(text, "level 2") == [
        "  [+] clean   Data_Processing.filter     succeeded    301ms  <- read",
        "  [x] enrich  Data_Processing.transform  failed       120ms  <- read  (3 attempts)",
        "        error: boom",
    ]
    assert section(text, "level 3") == [
        "  [-] write   Output.file                skipped             <- clean, enrich",
        "        reason: enrich failed",
    ]
    assert lines[-1].startswith("legend: [+] succeeded  [x] failed")


def test_a_running_step_is_timed_up_to_now_and_a_pending_one_not_at_all() -> None:
    steps = [
        StepNode("slow", "Test.sleep", (), "running", T0, None, 1),
        StepNode("next", "Test.emit", ("slow",), "pending"),
    ]
    header = RunHeader("r-2", "p", 1, "running", T0)
    text = render_run(header, steps, now=T0 + timedelta(seconds=75))
    assert "status: running   duration: 1m15s   steps: 1 running, 1 pending" in text
    assert section(text, "level 1") == ["  [>] slow  Test.sleep  running      1m15s"]
    assert section(text, "level 2") == ["  [ ] next  Test.emit   pending             <- slow"]


def test_a_queued_run_has_no_duration() -> None:
    header = RunHeader("r-3", "p", 1, "queued")
    text = render_run(header, [StepNode("a", "P", status="pending")], now=T0)
    assert text.splitlines()[1] == "status: queued   steps: 1 pending"


@pytest.mark.parametrize("status", sorted(MARKERS))
def test_every_step_state_has_its_own_marker(status: str) -> None:
    text = render_run(RunHeader("r", "p", 1, "running"), [StepNode("a", "P", status=status)], T0)
    assert step_lines(text)[0].startswith(f"  {MARKERS[status]} a  P  {status}")
    assert len(set(MARKERS.values())) == len(MARKERS)


def test_an_unknown_state_is_marked_as_such_rather_than_failing() -> None:
    text = render_run(RunHeader("r", "p", 1, "running"), [StepNode("a", "P", status="odd")], T0)
    assert step_lines(text)[0].startswith("  [?] a  P  odd")


def test_text_from_plugins_and_users_cannot_drive_the_terminal() -> None:
    hostile = "boom\x1b[2J\x1b]0;owned\x07\nnext line\r\u202eevil\u0085"
    steps = [StepNode("a", "P", (), "failed", T0, T0, 1, hostile)]
    text = render_run(RunHeader("r", "na\x1bme\nx", 1, "failed", error=hostile), steps, T0)
    assert all(ch == "\n" or ch.isprintable() for ch in text), repr(text)
    assert 'pipeline "na me x"' in text
    assert "error: boom [2J ]0;owned next line evil" in text


def test_clean_truncates_to_one_bounded_line() -> None:
    assert clean("a\n\n b\tc", 100) == "a b c"
    assert clean("x" * 500, 20) == "x" * 17 + "..."
    assert len(clean("x" * 500, 160)) == 160


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (None, ""),
        (0, "0ms"),
        (999.4, "999ms"),
        (1000, "1.0s"),
        (59_940, "59.9s"),
        (60_000, "1m00s"),
        (3_599_000, "59m59s"),
        (3_600_000, "1h00m"),
        (90_061_000, "25h01m"),
    ],
)
def test_durations_are_short(ms: float | None, text: str) -> None:
    assert format_duration(ms) == text


def _ms(n: float) -> timedelta:
    return timedelta(milliseconds=n)
