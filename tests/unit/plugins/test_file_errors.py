"""Input.file and Output.file errors: each names the file and the line or record, and
none lets a step leave the tenant's folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from infrastructure.plugins import fileformats
from infrastructure.plugins.base import PluginError, StepContext
from infrastructure.plugins.files import InputFile, OutputFile
from tests.unit.plugins.helpers import ORDERS, read, run, stream, tenant_file, write

# --- errors ------------------------------------------------------------------------------


async def test_a_missing_file_is_named_and_may_arrive_for_a_retry(context: StepContext) -> None:
    with pytest.raises(PluginError, match=r"file 'nope\.jsonl': no such file") as failed:
        await read(context, path="nope.jsonl")

    assert failed.value.retryable is True


async def test_a_folder_is_not_a_file_and_never_will_be(context: StepContext) -> None:
    (context.files / "dir").mkdir(parents=True)

    with pytest.raises(PluginError, match="is a folder") as reading:
        await read(context, path="dir")
    with pytest.raises(PluginError, match="is a folder") as writing:
        await write(context, ORDERS, path="dir")
    assert reading.value.retryable is writing.value.retryable is False


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"a": 1}\n{"a": \n', "line 2: not valid JSON"),
        ('{"a": 1}\n\n[1, 2]\n', "line 3: a list, not an object"),
        ('"just text"\n', "line 1: a string, not an object"),
    ],
)
async def test_a_bad_json_line_is_named_by_number(
    context: StepContext, text: str, problem: str
) -> None:
    context.files.mkdir(parents=True)
    tenant_file(context, "bad.jsonl").write_text(text)

    with pytest.raises(PluginError, match=f"file 'bad.jsonl' {problem}") as failed:
        await read(context, path="bad.jsonl")

    assert failed.value.retryable is False


async def test_an_overlong_line_is_refused_not_read_whole(
    context: StepContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fileformats, "MAX_RECORD_BYTES", 100)
    context.files.mkdir(parents=True)
    tenant_file(context, "long.jsonl").write_text('{"a": 1}\n{"a": "' + "x" * 500 + '"}\n')
    tenant_file(context, "long.csv").write_text("a\n" + "x" * 500 + "\n")
    tenant_file(context, "long.json").write_text('[{"a": "' + "x" * 200_000 + '"}]')

    with pytest.raises(PluginError, match="line 2 is longer than 100 bytes"):
        await read(context, path="long.jsonl")
    with pytest.raises(PluginError, match="a record is longer than 100 bytes"):
        await read(context, path="long.csv", format="csv")
    with pytest.raises(PluginError, match="record 1 is larger than 100 bytes"):
        await read(context, path="long.json", format="json")


async def test_the_size_limit_is_per_record_not_for_what_follows_the_records(
    context: StepContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fileformats, "MAX_RECORD_BYTES", 1000)
    context.files.mkdir(parents=True)
    # The list spans several 64 KiB chunks; then 200 KB without a record follow.
    data = [{"n": n} for n in range(20_000)]
    document = {"data": data, "appendix": "x" * 200_000}
    tenant_file(context, "d.json").write_text(json.dumps(document))

    records = await read(context, path="d.json", format="json", records_path="data")

    assert records == data


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("a,b\n1,2\n3,4,5\n", "line 3: 3 values, but the header has 2 fields"),
        ("a,a\n1,2\n", "line 1: the header names 'a' twice"),
        ('a\n"unterminated\n', "line"),
    ],
)
async def test_a_bad_csv_file_is_named_with_its_line(
    context: StepContext, text: str, problem: str
) -> None:
    context.files.mkdir(parents=True)
    tenant_file(context, "bad.csv").write_text(text)

    with pytest.raises(PluginError, match=f"file 'bad.csv' {problem}"):
        await read(context, path="bad.csv", format="csv")


async def test_csv_that_is_not_utf8_is_refused(context: StepContext) -> None:
    context.files.mkdir(parents=True)
    tenant_file(context, "latin.csv").write_bytes("name\nJosé\n".encode("latin-1"))

    with pytest.raises(PluginError, match="not UTF-8"):
        await read(context, path="latin.csv", format="csv")


async def test_json_lines_given_as_json_get_a_hint(context: StepContext) -> None:
    context.files.mkdir(parents=True)
    tenant_file(context, "o.json").write_text('{"a": 1}\n{"a": 2}\n')

    with pytest.raises(PluginError, match="use format jsonl"):
        await read(context, path="o.json", format="json")


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ('[{"a": 1}, 2]', "item 2 is a number, not an object"),
        ('{"data": 5}', "expected a list or an object at records_path 'data'"),
        ('{"other": []}', "no records_path 'data'"),
        ('[{"a": 1},', "not valid JSON"),
    ],
)
async def test_a_bad_json_document_says_what_is_wrong(
    context: StepContext, document: str, problem: str
) -> None:
    context.files.mkdir(parents=True)
    tenant_file(context, "d.json").write_text(document)
    path = "data" if "records_path" in problem else None
    config = {"path": "d.json", "format": "json", "records_path": path}

    with pytest.raises(PluginError, match=problem):
        await run(InputFile, {k: v for k, v in config.items() if v}, context)


@pytest.mark.parametrize("plugin", [InputFile, OutputFile])
async def test_a_symbolic_link_cannot_lead_a_step_outside(
    tmp_path: Path, context: StepContext, plugin: type
) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "x.jsonl").write_text('{"secret": true}\n')
    context.files.mkdir(parents=True)
    os.symlink(outside, context.files / "link")

    with pytest.raises(PluginError, match="outside the tenant's folder"):
        await run(plugin, {"path": "link/x.jsonl"}, context, stream(ORDERS))

    assert (outside / "x.jsonl").read_text() == '{"secret": true}\n'
