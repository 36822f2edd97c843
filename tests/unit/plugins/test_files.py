"""Input.file and Output.file on real files in a temporary tenant folder: formats,
overwrite and append, and what failure or cancellation leaves behind."""

from __future__ import annotations

import asyncio
import json

import pytest

from infrastructure.plugins import blocking
from infrastructure.plugins.base import PluginError, Record, StepContext
from infrastructure.plugins.files import InputFile, OutputFile
from tests.unit.plugins.helpers import (
    ORDERS,
    execute,
    leftovers,
    read,
    run,
    tenant_file,
    write,
)

# --- round trips -----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jsonl", "json"])
async def test_json_formats_round_trip(context: StepContext, fmt: str) -> None:
    passed_on = await write(context, ORDERS, path=f"out/orders.{fmt}", format=fmt)

    assert passed_on == ORDERS
    assert await read(context, path=f"out/orders.{fmt}", format=fmt) == ORDERS
    assert leftovers(context) == []


async def test_jsonl_is_one_object_per_line(context: StepContext) -> None:
    await write(context, ORDERS, path="o.jsonl")

    lines = tenant_file(context, "o.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == ORDERS


async def test_json_output_is_an_array(context: StepContext) -> None:
    await write(context, ORDERS, path="o.json", format="json")
    await write(context, [], path="empty.json", format="json")

    assert json.loads(tenant_file(context, "o.json").read_text()) == ORDERS
    assert json.loads(tenant_file(context, "empty.json").read_text()) == []


async def test_csv_header_comes_from_the_first_record(context: StepContext) -> None:
    await write(context, ORDERS, path="o.csv", format="csv")

    assert tenant_file(context, "o.csv").read_text().splitlines() == [
        "id,amount,status,note,vip",
        "1,12.5,paid,,true",
        "2,3,open,call back,false",
    ]


async def test_csv_cells_read_back_as_the_values_they_spell(context: StepContext) -> None:
    await write(context, ORDERS, path="o.csv", format="csv")

    assert await read(context, path="o.csv", format="csv") == ORDERS


async def test_csv_type_inference_keeps_what_would_not_come_back_the_same(
    context: StepContext,
) -> None:
    context.files.mkdir(parents=True)
    tenant_file(context, "t.csv").write_text(
        'zip,big,neg,exp,word,empty,flag\n007,1234567890123456789012,-4,1e3,"hello, world",,True\n'
    )

    [record] = await read(context, path="t.csv", format="csv")
    [text] = await read(context, path="t.csv", format="csv", infer_types=False)

    assert record == {
        "zip": "007",
        "big": "1234567890123456789012",
        "neg": -4,
        "exp": 1000.0,
        "word": "hello, world",
        "empty": None,
        "flag": "True",
    }
    assert text["neg"] == "-4"
    assert text["empty"] == ""


async def test_csv_nested_values_are_written_as_json(context: StepContext) -> None:
    await write(
        context, [{"id": 1, "tags": ["a", "b"], "meta": {"k": 1}}], path="n.csv", format="csv"
    )

    [record] = await read(context, path="n.csv", format="csv")
    assert json.loads(record["tags"]) == ["a", "b"]
    assert json.loads(record["meta"]) == {"k": 1}


async def test_csv_missing_fields_are_empty_cells(context: StepContext) -> None:
    await write(context, [{"a": 1, "b": 2}, {"a": 3}], path="m.csv", format="csv")

    assert await read(context, path="m.csv", format="csv") == [
        {"a": 1, "b": 2},
        {"a": 3, "b": None},
    ]


async def test_csv_multiline_quoted_cells_round_trip(context: StepContext) -> None:
    records = [{"id": 1, "text": 'line one\nline "two", with comma'}]
    await write(context, records, path="q.csv", format="csv")

    assert await read(context, path="q.csv", format="csv") == records


async def test_many_records_cross_batch_boundaries_in_order(context: StepContext) -> None:
    records = [{"n": i, "pad": "x" * (i % 50 + 1)} for i in range(5003)]
    for fmt in ("jsonl", "csv", "json"):
        await write(context, records, path=f"big.{fmt}", format=fmt)

        assert await read(context, path=f"big.{fmt}", format=fmt) == records


async def test_json_input_reads_the_list_at_records_path(context: StepContext) -> None:
    context.files.mkdir(parents=True)
    tenant_file(context, "doc.json").write_text(
        json.dumps({"meta": {"n": 2}, "data": {"items": ORDERS}})
    )
    tenant_file(context, "one.json").write_text(json.dumps({"id": 7}))
    tenant_file(context, "item.json").write_text(json.dumps({"item": {"a": 1}, "b": 2}))

    assert await read(context, path="doc.json", format="json", records_path="data.items") == ORDERS
    assert await read(context, path="doc.json", format="json", records_path="meta") == [{"n": 2}]
    assert await read(context, path="one.json", format="json") == [{"id": 7}]
    # A key named "item" is not an array element.
    assert await read(context, path="item.json", format="json") == [{"item": {"a": 1}, "b": 2}]


async def test_an_input_step_consumes_and_drops_upstream_records(context: StepContext) -> None:
    await write(context, ORDERS, path="o.jsonl")
    consumed: list[Record] = []

    async def upstream():
        for record in [{"x": 1}, {"x": 2}]:
            consumed.append(record)
            yield record

    out = await run(InputFile, {"path": "o.jsonl"}, context, upstream())

    assert out == ORDERS
    assert consumed == [{"x": 1}, {"x": 2}]


# --- overwrite and append ----------------------------------------------------------------


async def test_overwrite_replaces_the_file(context: StepContext) -> None:
    await write(context, ORDERS, path="o.jsonl")
    await write(context, ORDERS[:1], path="o.jsonl")

    assert await read(context, path="o.jsonl") == ORDERS[:1]


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "json"])
async def test_append_adds_to_the_end(context: StepContext, fmt: str) -> None:
    await write(context, ORDERS[:1], path=f"a.{fmt}", format=fmt, mode="append")
    await write(context, ORDERS[1:], path=f"a.{fmt}", format=fmt, mode="append")

    assert await read(context, path=f"a.{fmt}", format=fmt) == ORDERS
    assert leftovers(context) == []


async def test_csv_append_keeps_the_existing_header(context: StepContext) -> None:
    await write(context, [{"a": 1, "b": 2}], path="h.csv", format="csv")
    await write(context, [{"b": 4, "a": 3}], path="h.csv", format="csv", mode="append")

    assert tenant_file(context, "h.csv").read_text().splitlines() == ["a,b", "1,2", "3,4"]


async def test_jsonl_append_to_a_file_without_final_newline(context: StepContext) -> None:
    context.files.mkdir(parents=True)
    tenant_file(context, "x.jsonl").write_text('{"n": 0}')

    await write(context, [{"n": 1}], path="x.jsonl", mode="append")

    assert await read(context, path="x.jsonl") == [{"n": 0}, {"n": 1}]


async def test_a_csv_record_with_a_field_the_header_lacks_fails_clearly(
    context: StepContext,
) -> None:
    records = [{"a": 1}, {"a": 2}, {"a": 3, "b": 4, "c": 5}]

    with pytest.raises(PluginError) as failed:
        await write(context, records, path="h.csv", format="csv")

    message = str(failed.value)
    assert "file 'h.csv'" in message
    assert "record 3" in message
    assert "'b', 'c'" in message
    assert failed.value.retryable is False
    assert not tenant_file(context, "h.csv").exists()
    assert leftovers(context) == []


async def test_csv_append_refuses_a_field_the_existing_header_lacks(context: StepContext) -> None:
    await write(context, [{"a": 1}], path="h.csv", format="csv")

    with pytest.raises(PluginError, match="existing file's header"):
        await write(context, [{"a": 2, "z": 1}], path="h.csv", format="csv", mode="append")

    assert tenant_file(context, "h.csv").read_text().splitlines() == ["a", "1"]


@pytest.mark.parametrize("mode", ["overwrite", "append"])
async def test_a_failing_upstream_leaves_the_file_as_it_was(
    context: StepContext, mode: str
) -> None:
    await write(context, ORDERS, path="o.jsonl")
    before = tenant_file(context, "o.jsonl").read_bytes()

    async def breaks_midway():
        yield {"id": 99}
        raise PluginError("upstream broke")

    with pytest.raises(PluginError, match="upstream broke"):
        await run(OutputFile, {"path": "o.jsonl", "mode": mode}, context, breaks_midway())

    assert tenant_file(context, "o.jsonl").read_bytes() == before
    assert leftovers(context) == []


async def test_a_cancelled_write_leaves_the_file_as_it_was(context: StepContext) -> None:
    await write(context, ORDERS, path="o.jsonl")
    before = tenant_file(context, "o.jsonl").read_bytes()
    waiting = asyncio.Event()

    async def never_ends():
        yield {"id": 99}
        waiting.set()
        await asyncio.Event().wait()
        yield {"id": 100}

    task = asyncio.create_task(run(OutputFile, {"path": "o.jsonl"}, context, never_ends()))
    await waiting.wait()
    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task
    assert tenant_file(context, "o.jsonl").read_bytes() == before
    assert leftovers(context) == []


async def test_a_cancelled_run_stops_a_long_read(context: StepContext, monkeypatch) -> None:
    monkeypatch.setattr(blocking, "BATCH_RECORDS", 10)
    await write(context, [{"n": i} for i in range(3000)], path="long.jsonl")
    reading = execute(InputFile, {"path": "long.jsonl"}, context)
    seen = 0

    with pytest.raises(PluginError, match="cancelled"):
        async for _ in reading:
            seen += 1
            context.cancelled.set()

    assert seen == 1000  # stopped at the first checkpoint
