"""The plugin catalog: built-in schemas, how a step's config is checked against them,
and registration of third-party plugins. No I/O."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
import pytest

from infrastructure.plugins import catalog as catalog_module
from infrastructure.plugins.base import Plugin
from infrastructure.plugins.builtin import BUILTIN_PLUGINS, InputFile
from infrastructure.plugins.catalog import PluginCatalog

BUILTIN_REFS = [
    "Data_Processing.aggregate",
    "Data_Processing.filter",
    "Data_Processing.transform",
    "Input.file",
    "Input.http",
    "Input.postgres",
    "Output.file",
    "Output.postgres",
    "Output.webhook",
]


@pytest.fixture
def catalog() -> PluginCatalog:
    return PluginCatalog()


def config_schema(plugin: type[Plugin]) -> dict[str, Any]:
    schema = plugin.config_schema()
    name = schema["$ref"].rsplit("/", 1)[1]
    return schema["$defs"][name]


# --- the built-in catalog ---------------------------------------------------------------


def test_the_catalog_lists_the_builtins_sorted_by_reference(catalog: PluginCatalog) -> None:
    assert [p.ref() for p in catalog.all()] == BUILTIN_REFS


def test_get_finds_a_plugin_by_reference(catalog: PluginCatalog) -> None:
    assert catalog.get("Input.file") is InputFile
    assert catalog.get("input.file") is None
    assert catalog.get("Input.ftp") is None


@pytest.mark.parametrize("plugin", BUILTIN_PLUGINS, ids=lambda p: p.ref())
def test_every_builtin_has_a_json_schema_of_an_object(plugin: type[Plugin]) -> None:
    schema = config_schema(plugin)

    assert schema["type"] == "object"
    assert schema["properties"]
    assert schema["additionalProperties"] is False
    assert plugin.description


@pytest.mark.parametrize(
    ("ref", "required"),
    [
        ("Input.file", ["path"]),
        ("Input.http", ["url"]),
        ("Data_Processing.filter", ["expression"]),
        ("Data_Processing.transform", []),
        ("Data_Processing.aggregate", ["aggregates"]),
        ("Output.file", ["path"]),
        ("Output.webhook", ["url"]),
        ("Input.postgres", ["host", "database", "user", "query"]),
        ("Output.postgres", ["host", "database", "user", "table"]),
    ],
)
def test_builtin_schemas_name_their_required_fields(
    catalog: PluginCatalog, ref: str, required: list[str]
) -> None:
    plugin = catalog.get(ref)
    assert plugin is not None

    assert config_schema(plugin)["required"] == required


@pytest.mark.parametrize(
    ("ref", "config"),
    [
        ("Input.file", {"path": "in/orders.jsonl"}),
        ("Input.file", {"path": "orders.csv", "format": "csv"}),
        ("Input.http", {"url": "https://api.example.test/items", "timeout": 5}),
        ("Data_Processing.filter", {"expression": "amount > 10"}),
        ("Data_Processing.transform", {"fields": {"total": "amount * 2"}}),
        ("Data_Processing.transform", {"drop": ["secret"]}),
        ("Data_Processing.aggregate", {"aggregates": {"n": "count"}}),
        (
            "Data_Processing.aggregate",
            {"group_by": ["region"], "aggregates": {"total": "sum:amount", "top": "max:amount"}},
        ),
        ("Input.file", {"path": "a.json", "format": "json", "records_path": "data.items"}),
        ("Output.file", {"path": "out/orders.jsonl", "mode": "append"}),
        ("Output.webhook", {"url": "http://hooks.example.test", "batch_size": 10_000}),
    ],
)
def test_a_valid_config_has_no_problems(
    catalog: PluginCatalog, ref: str, config: dict[str, Any]
) -> None:
    assert catalog.check(ref, config) == []


@pytest.mark.parametrize(
    ("ref", "field"),
    [
        ("Input.file", "path"),
        ("Input.http", "url"),
        ("Data_Processing.filter", "expression"),
        ("Data_Processing.aggregate", "aggregates"),
        ("Output.file", "path"),
        ("Output.webhook", "url"),
    ],
)
def test_a_missing_required_field_is_reported_by_name(
    catalog: PluginCatalog, ref: str, field: str
) -> None:
    assert catalog.check(ref, {}) == [f"config.{field}: required"]


def test_an_unknown_field_is_reported_by_name(catalog: PluginCatalog) -> None:
    assert catalog.check("Input.file", {"path": "a.jsonl", "colour": "red"}) == [
        "config.colour: unknown field"
    ]


@pytest.mark.parametrize(
    ("ref", "config", "field"),
    [
        ("Input.file", {"path": 3}, "config.path"),
        ("Input.file", {"path": ""}, "config.path"),
        ("Input.file", {"path": "a", "format": "xml"}, "config.format"),
        ("Input.http", {"url": "ftp://example.test"}, "config.url"),
        ("Input.http", {"url": "https://x.test", "timeout": 0}, "config.timeout"),
        ("Input.http", {"url": "https://x.test", "timeout": 301}, "config.timeout"),
        ("Output.file", {"path": "a", "mode": "truncate"}, "config.mode"),
        ("Output.webhook", {"url": "https://x.test", "batch_size": 10_001}, "config.batch_size"),
        ("Data_Processing.filter", {"expression": ""}, "config.expression"),
        ("Data_Processing.aggregate", {"aggregates": {"n": "median:x"}}, "config.aggregates.n"),
        ("Data_Processing.aggregate", {"aggregates": {"n": "sum:"}}, "config.aggregates.n"),
        ("Data_Processing.aggregate", {"aggregates": {"n": 3}}, "config.aggregates[...]"),
        (
            "Data_Processing.aggregate",
            {"aggregates": {"n": "count"}, "max_groups": 0},
            "config.max_groups",
        ),
    ],
)
def test_a_bad_value_is_reported_at_its_field(
    catalog: PluginCatalog, ref: str, config: dict[str, Any], field: str
) -> None:
    [problem] = catalog.check(ref, config)

    where, _, message = problem.partition(": ")
    assert where == field
    assert message


def test_a_bad_nested_value_is_reported_under_its_parent_field(catalog: PluginCatalog) -> None:
    [problem] = catalog.check("Input.http", {"url": "https://x.test", "headers": {"a": 1}})

    assert problem.startswith("config.headers")
    assert "Expected `str`, got `int`" in problem


@pytest.mark.parametrize("ref", ["Input.file", "Output.file"])
@pytest.mark.parametrize(
    "path",
    ["../secrets.jsonl", "a/../../b.jsonl", "a/..", "/etc/passwd", "..\\windows\\x", "a\\..\\b"],
)
def test_a_file_path_may_not_escape_the_tenants_folder(
    catalog: PluginCatalog, ref: str, path: str
) -> None:
    assert catalog.check(ref, {"path": path}) == [
        "config.path: must be relative to the tenant's folder, without '..'"
    ]


@pytest.mark.parametrize("path", ["a.jsonl", "in/2024/a.jsonl", "./a.jsonl", "a..b/c..jsonl"])
def test_a_relative_file_path_is_fine(catalog: PluginCatalog, path: str) -> None:
    assert catalog.check("Input.file", {"path": path}) == []


def test_an_unknown_plugin_is_reported_on_the_plugin_field(catalog: PluginCatalog) -> None:
    assert catalog.check("Input.ftp", {"host": "x"}) == [
        "plugin: unknown plugin 'Input.ftp'; see GET /api/v1/plugins"
    ]


def test_transform_needs_fields_or_drop(catalog: PluginCatalog) -> None:
    assert catalog.check("Data_Processing.transform", {}) == ["config: set 'fields' or 'drop'"]
    assert catalog.check("Data_Processing.transform", {"fields": {}, "drop": []}) == [
        "config: set 'fields' or 'drop'"
    ]


def test_an_expression_is_checked_when_the_pipeline_is_written(catalog: PluginCatalog) -> None:
    [problem] = catalog.check("Data_Processing.filter", {"expression": "amount >"})
    assert problem.startswith("config.expression: invalid syntax")

    assert catalog.check("Data_Processing.filter", {"expression": "shout(name)"}) == [
        "config.expression: unknown function 'shout'; available: abs, bool, coalesce, "
        "endswith, field, float, int, len, lower, max, min, round, startswith, str, strip, "
        "upper"
    ]
    [attribute] = catalog.check("Data_Processing.filter", {"expression": "name.upper()"})
    assert attribute.startswith("config.expression: attribute access")


def test_each_transform_expression_is_checked_at_its_field(catalog: PluginCatalog) -> None:
    problems = catalog.check(
        "Data_Processing.transform",
        {"fields": {"ok": "a + 1", "bad": "a +", "evil": "__import__('os')"}, "drop": ["ok"]},
    )

    assert [p.partition(": ")[0] for p in problems] == [
        "config.fields.bad",
        "config.fields.evil",
        "config.drop",
    ]


def test_aggregate_rules_beyond_the_schema(catalog: PluginCatalog) -> None:
    assert catalog.check("Data_Processing.aggregate", {"aggregates": {}}) == [
        'config.aggregates: name at least one, e.g. {"n": "count"}'
    ]
    assert catalog.check(
        "Data_Processing.aggregate",
        {"group_by": ["region", "region"], "aggregates": {"region": "count"}},
    ) == [
        "config.group_by: a field is named twice",
        "config.aggregates.region: also a group_by field",
    ]


def test_records_path_is_only_for_json_files(catalog: PluginCatalog) -> None:
    assert catalog.check("Input.file", {"path": "a.csv", "format": "csv", "records_path": "x"}) == [
        "config.records_path: only for format json"
    ]


# --- registration -----------------------------------------------------------------------


class Shout(Plugin):
    type, name = "Data_Processing", "shout"
    description = "Upper-case one field."

    class Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
        field: str
        times: int = 1

    @classmethod
    def check(cls, config: msgspec.Struct) -> list[str]:
        return [] if config.times <= 3 else ["config.times: at most 3"]  # type: ignore[attr-defined]


def test_a_registered_plugin_is_listed_and_its_config_checked(catalog: PluginCatalog) -> None:
    catalog.register(Shout)

    assert catalog.get("Data_Processing.shout") is Shout
    assert "Data_Processing.shout" in [p.ref() for p in catalog.all()]
    assert catalog.check("Data_Processing.shout", {"field": "name"}) == []
    assert catalog.check("Data_Processing.shout", {}) == ["config.field: required"]
    assert catalog.check("Data_Processing.shout", {"field": "n", "times": 9}) == [
        "config.times: at most 3"
    ]


def test_registering_does_not_change_another_catalog() -> None:
    one, other = PluginCatalog(), PluginCatalog()

    one.register(Shout)

    assert other.get("Data_Processing.shout") is None


@pytest.mark.parametrize(
    "not_a_plugin",
    [object, str, InputFile(), "Input.file", None, lambda: None],
    ids=["object", "str", "instance", "reference", "None", "function"],
)
def test_register_rejects_what_is_not_a_plugin_class(
    catalog: PluginCatalog, not_a_plugin: Any
) -> None:
    with pytest.raises(TypeError, match="is not a Plugin subclass"):
        catalog.register(not_a_plugin)

    assert [p.ref() for p in catalog.all()] == BUILTIN_REFS


class NoConfig(Plugin):
    type, name = "Output", "nowhere"


def test_register_rejects_a_plugin_class_without_a_config(catalog: PluginCatalog) -> None:
    with pytest.raises(TypeError):
        catalog.register(NoConfig)

    assert [p.ref() for p in catalog.all()] == BUILTIN_REFS


class _EntryPoint:
    def __init__(self, name: str, loaded: Any) -> None:
        self.name, self.value, self._loaded = name, f"pkg:{name}", loaded

    def load(self) -> Any:
        if isinstance(self._loaded, Exception):
            raise self._loaded
        return self._loaded


def test_entry_point_plugins_are_added_and_broken_ones_skipped(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    points = [
        _EntryPoint("shout", Shout),
        _EntryPoint("broken", ImportError("no module named shouty")),
        _EntryPoint("bogus", object),
    ]
    monkeypatch.setattr(
        catalog_module, "entry_points", lambda group: points if group == "norn.plugins" else []
    )

    with caplog.at_level(logging.ERROR, logger=catalog_module.__name__):
        catalog = PluginCatalog.with_entry_points()

    assert [p.ref() for p in catalog.all()] == sorted([*BUILTIN_REFS, "Data_Processing.shout"])
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "broken" in logged
    assert "bogus" in logged
