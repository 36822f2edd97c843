"""Pipelines of the built-in plugins, run end to end over HTTP by the executor role
against real PostgreSQL and NATS: the files they write hold exactly the right records."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from infrastructure.settings import Settings
from tests.integration.api_client import running_app
from tests.integration.run_helpers import (
    ALL_ROLES,
    make_pipeline,
    run_settings,
    step,
    steps_of,
    tenant_editor,
    trigger,
    wait_run,
)

ORDERS = [
    {"id": 1, "status": "paid", "amount": 12.5, "region": "eu"},
    {"id": 2, "status": "open", "amount": 99.0, "region": "us"},
    {"id": 3, "status": "paid", "amount": 4.0, "region": "eu"},
    {"id": 4, "status": "paid", "amount": 40.0, "region": "us"},
    {"id": 5, "status": "paid", "amount": 11.0, "region": "eu"},
]


def tenant_folder(settings: Settings, tenant_id: str) -> Path:
    folder = settings.files_dir / tenant_id
    folder.mkdir(parents=True, exist_ok=True)
    return folder


async def test_a_three_step_file_pipeline_writes_the_right_file(settings: Settings) -> None:
    settings = run_settings(settings)
    async with running_app(settings, roles=ALL_ROLES) as client:
        tenant_id, editor, _ = await tenant_editor(client, settings)
        folder = tenant_folder(settings, tenant_id)
        (folder / "orders.jsonl").write_text("".join(json.dumps(o) + "\n" for o in ORDERS))
        pipeline_id = await make_pipeline(
            client,
            editor,
            "paid-orders",
            step("read", "Input.file", config={"path": "orders.jsonl"}),
            step(
                "paid",
                "Data_Processing.filter",
                "read",
                config={"expression": 'status == "paid" and amount > 10'},
            ),
            step("write", "Output.file", "paid", config={"path": "out/paid.csv", "format": "csv"}),
        )

        run = await wait_run(client, editor, (await trigger(client, editor, pipeline_id))["run_id"])

        assert run["status"] == "succeeded", run
        counts = {name: (s["records_in"], s["records_out"]) for name, s in steps_of(run).items()}
        assert counts == {"read": (0, 5), "paid": (5, 3), "write": (3, 3)}
        written = list(csv.DictReader(io.StringIO((folder / "out" / "paid.csv").read_text())))
        assert written == [
            {"id": "1", "status": "paid", "amount": "12.5", "region": "eu"},
            {"id": "4", "status": "paid", "amount": "40.0", "region": "us"},
            {"id": "5", "status": "paid", "amount": "11.0", "region": "eu"},
        ]


async def test_transform_and_aggregate_feed_a_json_file(settings: Settings) -> None:
    settings = run_settings(settings)
    async with running_app(settings, roles=ALL_ROLES) as client:
        tenant_id, editor, _ = await tenant_editor(client, settings)
        folder = tenant_folder(settings, tenant_id)
        (folder / "orders.json").write_text(json.dumps({"data": {"orders": ORDERS}}))
        pipeline_id = await make_pipeline(
            client,
            editor,
            "revenue",
            step(
                "read",
                "Input.file",
                config={"path": "orders.json", "format": "json", "records_path": "data.orders"},
            ),
            step(
                "cents",
                "Data_Processing.transform",
                "read",
                config={"fields": {"cents": "int(amount * 100)"}, "drop": ["amount"]},
            ),
            step(
                "by_region",
                "Data_Processing.aggregate",
                "cents",
                config={
                    "group_by": ["region"],
                    "aggregates": {"orders": "count", "cents": "sum:cents"},
                },
            ),
            step(
                "write",
                "Output.file",
                "by_region",
                config={"path": "revenue.json", "format": "json"},
            ),
        )

        run = await wait_run(client, editor, (await trigger(client, editor, pipeline_id))["run_id"])

        assert run["status"] == "succeeded", run
        assert json.loads((folder / "revenue.json").read_text()) == [
            {"region": "eu", "orders": 3, "cents": 1250 + 400 + 1100},
            {"region": "us", "orders": 2, "cents": 9900 + 4000},
        ]


async def test_a_plugin_error_fails_the_run_with_its_message(settings: Settings) -> None:
    settings = run_settings(settings)
    async with running_app(settings, roles=ALL_ROLES) as client:
        _, editor, _ = await tenant_editor(client, settings)
        pipeline_id = await make_pipeline(
            client,
            editor,
            "missing-input",
            step(
                "read", "Input.file", config={"path": "nowhere.jsonl"}, retries=1, retry_delay=0.05
            ),
            step("write", "Output.file", "read", config={"path": "never.jsonl"}),
        )

        run = await wait_run(client, editor, (await trigger(client, editor, pipeline_id))["run_id"])

        assert run["status"] == "failed"
        steps = steps_of(run)
        assert "nowhere.jsonl" in run["error"] and run["error"].startswith("step read failed:")
        assert steps["read"]["status"] == "failed" and steps["write"]["status"] == "skipped"
