"""The README's third-party plugin example works: it loads through a `norn.plugins`
entry point, the catalog checks its config, and it executes."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

from infrastructure.plugins import catalog as catalog_module
from infrastructure.plugins.base import PluginError, StepContext
from infrastructure.plugins.catalog import PluginCatalog
from tests.unit.plugins.example_mask import Mask

ENTRY_POINT = EntryPoint(
    name="mask", value="tests.unit.plugins.example_mask:Mask", group="norn.plugins"
)


@pytest.fixture
def catalog(monkeypatch: pytest.MonkeyPatch) -> PluginCatalog:
    monkeypatch.setattr(
        catalog_module,
        "entry_points",
        lambda group: [ENTRY_POINT] if group == "norn.plugins" else [],
    )
    return PluginCatalog.with_entry_points()


def test_the_entry_point_registers_the_plugin(catalog: PluginCatalog) -> None:
    assert catalog.get("Data_Processing.mask") is Mask
    schema = Mask.config_schema()["$defs"]["Config"]
    assert schema["required"] == ["fields"]
    assert schema["properties"]["keep_last"]["maximum"] == 8


def test_the_catalog_checks_its_config(catalog: PluginCatalog) -> None:
    assert catalog.check("Data_Processing.mask", {"fields": ["email"], "keep_last": 4}) == []
    assert catalog.check("Data_Processing.mask", {"fields": []}) == [
        "config.fields: name at least one field"
    ]
    assert catalog.check("Data_Processing.mask", {"fields": ["a"], "colour": 1}) == [
        "config.colour: unknown field"
    ]
    [too_many] = catalog.check("Data_Processing.mask", {"fields": ["a"], "keep_last": 9})
    assert too_many.startswith("config.keep_last:")


async def _records(*records: dict):
    for record in records:
        yield record


async def test_it_executes(catalog: PluginCatalog, context: StepContext) -> None:
    plugin = catalog.get("Data_Processing.mask")
    assert plugin is not None
    config = plugin.parse_config({"fields": ["card", "email"], "keep_last": 4})
    upstream = ({"card": "4111111111111111", "email": None, "id": 1}, {"id": 2})

    out = [r async for r in plugin().execute(config, context, _records(*upstream))]

    assert out == [{"card": "***1111", "email": "***", "id": 1}, {"id": 2}]
    assert upstream[0]["card"] == "4111111111111111"
    assert context.logs == [("info", "masked 2 values in 2 records")]  # type: ignore[attr-defined]


async def test_it_fails_with_a_message_for_the_user(
    catalog: PluginCatalog, context: StepContext
) -> None:
    config = Mask.parse_config({"fields": ["email"], "required": True})

    with pytest.raises(PluginError, match="record 2 has no field 'email'") as failed:
        [r async for r in Mask().execute(config, context, _records({"email": "a@b"}, {}))]

    assert failed.value.retryable is False
