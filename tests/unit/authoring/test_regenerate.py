"""regenerate: instructions applied to a draft of the next revision, each naming what
it changed; anything it cannot apply is refused, naming the instruction."""

from __future__ import annotations

import pytest

from application.authoring.plugins import specs_of
from application.authoring.regenerate import UnappliedInstructions, regenerate
from domain.pipeline import PipelineDefinition, StepSpec, validate_definition
from tests.unit.authoring.catalogs import EXTENDED

SPECS = specs_of(EXTENDED.entries())
BASE = PipelineDefinition(
    name="orders",
    steps=(
        StepSpec("read", "Input.file", {"path": "orders.csv", "format": "csv"}),
        StepSpec("fetch", "Input.http", {"url": "https://api.example.com/rates"}),
        StepSpec("enrich", "Data_Processing.transform", {"fields": {"eur": "amount * 0.9"}},
                 ("read", "fetch")),
        StepSpec("write", "Output.file", {"path": "out.jsonl"}, ("enrich",)),
    ),
)  # fmt: skip


def edit(instructions: str) -> tuple[dict[str, StepSpec], list[str]]:
    definition, applied = regenerate(BASE, instructions, SPECS, EXTENDED)
    validate_definition(definition, lambda s: EXTENDED.check(s.plugin, s.config))
    return {s.name: s for s in definition.steps}, [a.change for a in applied]


def test_add_a_filter_after_a_step_rewires_what_followed_it() -> None:
    steps, applied = edit("add a filter where status = 'paid' after read")
    assert steps["filter"].config == {"expression": 'status == "paid"'}
    assert steps["filter"].depends_on == ("read",)
    assert steps["enrich"].depends_on == ("filter", "fetch")
    assert applied == ["added step filter (Data_Processing.filter) after read"]


def test_add_before_and_by_default_before_the_destination() -> None:
    steps, _ = edit("add a field total = price * qty before write")
    assert steps["transform"].depends_on == ("enrich",) and steps["write"].depends_on == (
        "transform",
    )
    steps, _ = edit("add an aggregation of total amount by customer")
    assert steps["aggregate"].config["group_by"] == ["customer"]
    assert steps["write"].depends_on == ("aggregate",)


def test_remove_a_step_and_its_followers_follow_what_it_followed() -> None:
    steps, applied = edit("remove step enrich")
    assert "enrich" not in steps and steps["write"].depends_on == ("read", "fetch")
    assert applied[0].startswith("removed step enrich")


def test_write_elsewhere_instead_and_change_a_url() -> None:
    steps, _ = edit("write to out.csv instead")
    assert steps["write"].config == {"path": "out.csv", "format": "csv"}
    steps, _ = edit("post to https://hooks.example.com/in instead")
    assert steps["write"].plugin == "Output.webhook"
    assert steps["write"].config == {"url": "https://hooks.example.com/in"}
    steps, _ = edit("change the url of fetch to https://api.example.com/v2/rates")
    assert steps["fetch"].config["url"] == "https://api.example.com/v2/rates"


def test_several_instructions_retries_timeout_rename() -> None:
    steps, applied = edit(
        "retry fetch 3 times and add a timeout of 60 seconds to fetch; rename step write to save"
    )
    assert steps["fetch"].retries == 3 and steps["fetch"].timeout == 60
    assert "save" in steps and "write" not in steps and len(applied) == 3


def test_unrecognised_instructions_are_named() -> None:
    with pytest.raises(UnappliedInstructions) as refused:
        regenerate(BASE, "remove step nope, then frobnicate everything", SPECS, EXTENDED)
    problems = dict(refused.value.problems)
    assert set(problems) == {"remove step nope", "frobnicate everything"}
    assert (
        "no step 'nope'; the steps are read, fetch, enrich, write" in problems["remove step nope"]
    )
    with pytest.raises(UnappliedInstructions):
        regenerate(BASE, "change the retries of fetch to many", SPECS, EXTENDED)
    with pytest.raises(UnappliedInstructions) as no_field:
        regenerate(BASE, "set the colour of read to blue", SPECS, EXTENDED)
    assert "Input.file has no config field 'colour'" in no_field.value.problems[0][1]
