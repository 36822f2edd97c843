"""Data_Processing.filter, .transform and .aggregate over record streams."""

from __future__ import annotations

import pytest

from infrastructure.plugins.base import PluginError, StepContext
from infrastructure.plugins.processing import Aggregate, Filter, Transform
from tests.unit.plugins.helpers import execute, run

ORDERS = [
    {"id": 1, "region": "eu", "amount": 12, "status": "paid"},
    {"id": 2, "region": "us", "amount": 5, "status": "paid"},
    {"id": 3, "region": "eu", "amount": 30, "status": "open"},
    {"id": 4, "region": "eu", "amount": 8, "status": "paid"},
    {"id": 5, "region": "us", "amount": None, "status": "paid"},
]


# --- filter ------------------------------------------------------------------------------


async def test_filter_keeps_the_records_for_which_the_expression_is_true(
    context: StepContext,
) -> None:
    kept = await run(
        Filter, {"expression": 'coalesce(amount, 0) > 6 and status == "paid"'}, context, ORDERS
    )

    assert [r["id"] for r in kept] == [1, 4]
    assert kept[0] is ORDERS[0]  # passed on unchanged
    assert context.logs == [("info", "kept 2 of 5 records")]  # type: ignore[attr-defined]


async def test_filter_keeps_truthy_values(context: StepContext) -> None:
    records = [{"v": 0}, {"v": 1}, {"v": ""}, {"v": "x"}, {"v": None}, {}, {"v": []}]

    kept = await run(Filter, {"expression": "v"}, context, records)

    assert kept == [{"v": 1}, {"v": "x"}]


async def test_a_record_the_expression_fails_on_fails_the_step_naming_it(
    context: StepContext,
) -> None:
    with pytest.raises(PluginError) as failed:
        await run(Filter, {"expression": "amount > 6"}, context, ORDERS)

    assert str(failed.value).startswith("Data_Processing.filter: record 5: 'amount > 6' failed")
    assert "null" in str(failed.value)
    assert failed.value.retryable is False


async def test_filter_stops_when_the_run_is_cancelled(context: StepContext) -> None:
    records = ({"n": n} for n in range(10_000))
    seen = 0

    with pytest.raises(PluginError, match="cancelled"):
        async for _ in execute(Filter, {"expression": "true"}, context, records):
            seen += 1
            context.cancelled.set()

    assert seen < 10_000


# --- transform ---------------------------------------------------------------------------


async def test_transform_computes_fields_and_drops_others(context: StepContext) -> None:
    config = {
        "fields": {"total": "amount * 2", "label": 'upper(region) + "-" + str(id)'},
        "drop": ["status"],
    }

    out = await run(Transform, config, context, ORDERS[:2])

    assert out == [
        {"id": 1, "region": "eu", "amount": 12, "total": 24, "label": "EU-1"},
        {"id": 2, "region": "us", "amount": 5, "total": 10, "label": "US-2"},
    ]
    assert "total" not in ORDERS[0]  # the input record is not changed


async def test_every_transform_expression_sees_the_incoming_record(context: StepContext) -> None:
    config = {"fields": {"amount": "amount + 1", "before": "amount"}}

    [out] = await run(Transform, config, context, [{"amount": 1}])

    assert out == {"amount": 2, "before": 1}


async def test_transform_drop_alone_and_missing_fields(context: StepContext) -> None:
    out = await run(Transform, {"drop": ["status", "nope"]}, context, ORDERS[:1])
    [nulls] = await run(Transform, {"fields": {"x": "missing"}}, context, [{}])

    assert out == [{"id": 1, "region": "eu", "amount": 12}]
    assert nulls == {"x": None}


async def test_a_failing_transform_names_the_field_expression_and_record(
    context: StepContext,
) -> None:
    with pytest.raises(PluginError, match=r"record 5: 'amount \* 2' failed"):
        await run(Transform, {"fields": {"double": "amount * 2"}}, context, ORDERS)


# --- aggregate ---------------------------------------------------------------------------


async def test_aggregate_groups_and_computes_each_function(context: StepContext) -> None:
    config = {
        "group_by": ["region"],
        "aggregates": {
            "orders": "count",
            "priced": "count:amount",
            "total": "sum:amount",
            "average": "avg:amount",
            "smallest": "min:amount",
            "largest": "max:amount",
        },
    }

    rows = await run(Aggregate, config, context, ORDERS)

    assert rows == [
        {
            "region": "eu",
            "orders": 3,
            "priced": 3,
            "total": 50,
            "average": 50 / 3,
            "smallest": 8,
            "largest": 30,
        },
        {
            "region": "us",
            "orders": 2,
            "priced": 1,
            "total": 5,
            "average": 5.0,
            "smallest": 5,
            "largest": 5,
        },
    ]


async def test_aggregate_by_several_fields_in_order_of_first_appearance(
    context: StepContext,
) -> None:
    config = {"group_by": ["region", "status"], "aggregates": {"n": "count"}}

    rows = await run(Aggregate, config, context, ORDERS)

    assert rows == [
        {"region": "eu", "status": "paid", "n": 2},
        {"region": "us", "status": "paid", "n": 2},
        {"region": "eu", "status": "open", "n": 1},
    ]


async def test_without_group_by_there_is_one_row_even_for_no_records(
    context: StepContext,
) -> None:
    config = {"aggregates": {"n": "count", "total": "sum:amount", "avg": "avg:amount"}}

    assert await run(Aggregate, config, context, ORDERS) == [{"n": 5, "total": 55, "avg": 55 / 4}]
    assert await run(Aggregate, config, context, []) == [{"n": 0, "total": 0, "avg": None}]


async def test_missing_group_values_form_a_null_group_and_types_stay_apart(
    context: StepContext,
) -> None:
    records = [{"k": 1}, {"k": True}, {"k": 1.0}, {}, {"k": None}, {"k": [1]}, {"k": [1]}]

    rows = await run(Aggregate, {"group_by": ["k"], "aggregates": {"n": "count"}}, context, records)

    assert rows == [{"k": 1, "n": 2}, {"k": True, "n": 1}, {"k": None, "n": 2}, {"k": [1], "n": 2}]


async def test_min_and_max_work_on_text(context: StepContext) -> None:
    records = [{"name": "b"}, {"name": "a"}, {"name": "c"}]

    rows = await run(
        Aggregate, {"aggregates": {"first": "min:name", "last": "max:name"}}, context, records
    )

    assert rows == [{"first": "a", "last": "c"}]


async def test_sum_of_text_fails_naming_the_record(context: StepContext) -> None:
    records = [{"amount": 1}, {"amount": "12"}]

    with pytest.raises(PluginError, match=r'record 2: sum:amount .* needs numbers, got "12"'):
        await run(Aggregate, {"aggregates": {"total": "sum:amount"}}, context, records)


async def test_min_of_mixed_types_fails(context: StepContext) -> None:
    with pytest.raises(PluginError, match="cannot compare"):
        await run(Aggregate, {"aggregates": {"m": "min:v"}}, context, [{"v": 1}, {"v": "one"}])


async def test_max_groups_bounds_memory(context: StepContext) -> None:
    records = [{"id": n} for n in range(10)]
    config = {"group_by": ["id"], "aggregates": {"n": "count"}, "max_groups": 3}

    with pytest.raises(PluginError, match=r"record 4 starts group 4, more than max_groups \(3\)"):
        await run(Aggregate, config, context, records)
