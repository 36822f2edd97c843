"""GET /api/v1/runs/export (streamed NDJSON and CSV) and the text drawings
GET /api/v1/{pipelines,runs}/{id}/visualize, over HTTP against real Postgres and NATS;
and every bad input to these routes and /runs/statistics answers 400 in the documented
error shape, never 500."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

from infrastructure.postgres import create_read_pool
from infrastructure.settings import Settings
from projections.run_queries import RunQueries
from tests.integration.api_client import assert_error, login, make_tenant_user, running_app
from tests.integration.run_support import (
    EXECUTING,
    executing,
    finished,
    make_pipeline,
    run_to_end,
    seed_many_runs,
    seed_run,
    step,
    trigger,
)

EXPORT = "/api/v1/runs/export"
CSV_HEADER = (
    "id,tenant_id,pipeline_id,pipeline_name,namespace,revision,status,trigger_kind,trigger_id,"
    "retry_of,retried_by,resume_from,attempt,executor_id,cancel_requested,error,current_step,"
    "created_by,"
    "queued_at,started_at,finished_at,duration_ms,params,steps_total,steps_succeeded,"
    "steps_failed,steps_skipped,steps_cancelled,steps_unfinished,step_attempts,failed_steps"
).split(",")
NASTY = 'no, "never"\nnot once'  # a comma, quotes and a newline: CSV must quote it


def csv_rows(text: str) -> list[dict[str, str]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader)
    assert header == CSV_HEADER
    return [dict(zip(header, row, strict=True)) for row in reader]


def ndjson(text: str) -> list[dict[str, Any]]:
    assert text == "" or text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def assert_download(response: Any, media_type: str, extension: str) -> None:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == media_type
    disposition = response.headers["content-disposition"]
    assert re.fullmatch(rf'attachment; filename="runs-\d{{8}}T\d{{6}}Z\.{extension}"', disposition)
    # Streamed: no length known up front.
    assert "content-length" not in response.headers


async def test_export_of_executed_runs_as_ndjson_and_csv(settings: Settings) -> None:
    settings = executing(settings)
    async with running_app(settings, roles=EXECUTING) as client:
        root = await login(client, settings.admin_username or "", settings.admin_password or "")
        _, editor = await make_tenant_user(client, root, "acme", "editor")
        good = await make_pipeline(client, editor, "good", [step("a", "Test.emit", count=2)])
        bad = await make_pipeline(
            client,
            editor,
            "bad",
            [step("a", "Test.emit"), step("b", "Test.fail", "a", message=NASTY, retryable=False)],
        )
        ids = [await trigger(client, editor, p) for p in (good, bad, good)]
        runs = {run_id: await finished(client, editor, run_id) for run_id in ids}
        newest_first = [
            r["id"] for r in (await client.get("/api/v1/runs", headers=editor)).json()["items"]
        ]
        assert sorted(newest_first) == sorted(ids)

        response = await client.get(EXPORT, headers=editor)
        assert_download(response, "application/x-ndjson", "ndjson")
        lines = ndjson(response.text)
        assert [line["id"] for line in lines] == newest_first
        for line in lines:  # each line is the run as GET /runs/{id} shows it, steps included
            assert line == runs[line["id"]]

        response = await client.get(EXPORT, params={"format": "csv"}, headers=editor)
        assert_download(response, "text/csv; charset=utf-8", "csv")
        assert response.text.startswith(",".join(CSV_HEADER) + "\r\n")
        rows = csv_rows(response.text)
        assert [row["id"] for row in rows] == newest_first
        failed = next(row for row in rows if row["status"] == "failed")
        run = runs[failed["id"]]
        assert NASTY in run["error"] and failed["error"] == run["error"]  # quoted, round-trips
        assert failed["params"] == '{"k":"v"}' and failed["cancel_requested"] == "false"
        assert failed["queued_at"] == datetime.fromisoformat(run["queued_at"]).isoformat()
        assert float(failed["duration_ms"]) == run["duration_ms"]
        assert (failed["steps_total"], failed["steps_succeeded"], failed["steps_failed"]) == (
            "2",
            "1",
            "1",
        )
        assert (failed["steps_unfinished"], failed["failed_steps"]) == ("0", "b")
        ok = [row for row in rows if row["status"] == "succeeded"]
        assert [(r["steps_total"], r["steps_succeeded"], r["failed_steps"]) for r in ok] == [
            ("1", "1", "")
        ] * 2

        # The filters of GET /runs.
        only_failed = ndjson(
            (await client.get(EXPORT, params={"status": "failed"}, headers=editor)).text
        )
        assert [line["id"] for line in only_failed] == [failed["id"]]
        of_good = ndjson(
            (await client.get(EXPORT, params={"pipeline_id": good}, headers=editor)).text
        )
        assert {line["id"] for line in of_good} == {
            r for r in ids if runs[r]["pipeline_id"] == good
        }
        later = {"since": max(r["queued_at"] for r in runs.values()), "format": "csv"}
        last = csv_rows((await client.get(EXPORT, params=later, headers=editor)).text)
        assert [row["id"] for row in last] == [newest_first[0]]
        nothing = await client.get(
            EXPORT, params={"status": "crashed", "format": "csv"}, headers=editor
        )
        assert nothing.text == ",".join(CSV_HEADER) + "\r\n"
        assert (await client.get(EXPORT, params={"status": "crashed"}, headers=editor)).text == ""


async def test_export_walks_every_page_exactly_once_in_order(settings: Settings) -> None:
    async with running_app(settings) as client:
        root = await login(client, settings.admin_username or "", settings.admin_password or "")
        tenant_id, viewer = await make_tenant_user(client, root, "acme", "viewer")
        pipeline = uuid4()
        await seed_many_runs(settings.database_url or "", tenant_id, pipeline, 1234, _T0)

        rows = csv_rows((await client.get(EXPORT, params={"format": "csv"}, headers=viewer)).text)
        assert len(rows) == 1234 and len({row["id"] for row in rows}) == 1234
        keys = [(row["queued_at"], UUID(row["id"])) for row in rows]
        assert keys == sorted(keys, reverse=True)  # newest first, ties broken by id
        assert {(r["steps_total"], r["steps_failed"], r["step_attempts"]) for r in rows} == {
            ("2", "1", "3")
        }
        lines = ndjson((await client.get(EXPORT, headers=viewer)).text)
        assert [line["id"] for line in lines] == [row["id"] for row in rows]
        assert {tuple(s["name"] for s in line["steps"]) for line in lines} == {("a", "b")}


async def test_pages_hold_one_page_and_ignore_runs_queued_during_the_walk(
    settings: Settings,
) -> None:
    database_url = settings.database_url or ""
    tenant_id, pipeline = "tenant-pages", uuid4()
    await seed_many_runs(database_url, tenant_id, pipeline, 250, _T0)
    pool = create_read_pool(database_url, max_size=2)
    await pool.open()
    try:
        sizes, seen = [], []
        async for page in RunQueries(pool).pages(tenant_id, page_size=100):
            if not sizes:  # a run queued after the walk began is newer than its start
                await seed_run(database_url, tenant_id, pipeline, datetime.now(UTC), "queued")
            sizes.append(len(page))
            seen += [row["id"] for row in page]
        assert sizes == [100, 100, 50] and len(set(seen)) == 250
    finally:
        await pool.close()


async def test_visualize_a_pipeline_and_its_run(settings: Settings) -> None:
    settings = executing(settings)
    async with running_app(settings, roles=EXECUTING) as client:
        root = await login(client, settings.admin_username or "", settings.admin_password or "")
        _, editor = await make_tenant_user(client, root, "acme", "editor")
        diamond = [
            step("read", "Test.emit"),
            step("left", "Test.emit", "read"),
            step("right", "Test.fail", "read", message="no\x1b[31m luck", retryable=False),
            step("join", "Test.emit", "left", "right"),
        ]
        pipeline = await make_pipeline(client, editor, "diamond", diamond)
        run = await run_to_end(client, editor, pipeline)

        drawing = await client.get(f"/api/v1/pipelines/{pipeline}/visualize", headers=editor)
        assert drawing.status_code == 200, drawing.text
        assert drawing.headers["content-type"] == "text/plain; charset=utf-8"
        text = drawing.text
        assert text.startswith('pipeline "diamond" revision 1: 4 steps in 3 levels\n')
        assert "level 2 (2 in parallel)" in text
        assert "  [*] join   Test.emit  <- left, right\n" in text

        drawing = await client.get(f"/api/v1/runs/{run['id']}/visualize", headers=editor)
        assert drawing.status_code == 200, drawing.text
        assert drawing.headers["content-type"] == "text/plain; charset=utf-8"
        lines = drawing.text.splitlines()
        assert lines[0] == f'run {run["id"]} of pipeline "diamond" revision 1'
        assert lines[1].startswith("status: failed   duration: ")
        assert lines[1].endswith("steps: 2 succeeded, 1 failed, 1 skipped")
        marked = {line.split()[1]: line.split()[0] for line in lines if line.startswith("  [")}
        assert marked == {"read": "[+]", "left": "[+]", "right": "[x]", "join": "[-]"}
        assert "\x1b" not in drawing.text and "        error: no [31m luck" in drawing.text

        # A later revision draws as the pipeline is now; ?revision= draws an earlier one.
        revised = await client.put(
            f"/api/v1/pipelines/{pipeline}",
            json={"name": "diamond", "steps": [step("only", "Test.emit")]},
            headers=editor,
        )
        assert revised.status_code == 200, revised.text
        position = revised.json()["position"]
        now = await client.get(
            f"/api/v1/pipelines/{pipeline}/visualize?min_position={position}", headers=editor
        )
        assert now.text.startswith('pipeline "diamond" revision 2: 1 step in 1 level\n')
        then = await client.get(
            f"/api/v1/pipelines/{pipeline}/visualize?revision=1", headers=editor
        )
        assert then.text == text
        missing = await client.get(
            f"/api/v1/pipelines/{pipeline}/visualize?revision=9", headers=editor
        )
        assert_error(missing, 404, "RESOURCE_NOT_FOUND")


async def test_a_500_step_pipeline_draws_every_step(settings: Settings) -> None:
    async with running_app(executing(settings)) as client:
        root = await login(client, settings.admin_username or "", settings.admin_password or "")
        _, editor = await make_tenant_user(client, root, "acme", "editor")
        chain = [step("s0", "Test.emit")] + [
            step(f"s{n}", "Test.emit", f"s{n - 1}") for n in range(1, 500)
        ]
        pipeline = await make_pipeline(client, editor, "long", chain)
        drawing = await client.get(f"/api/v1/pipelines/{pipeline}/visualize", headers=editor)
        assert drawing.status_code == 200, drawing.text
        lines = drawing.text.splitlines()
        assert lines[0] == 'pipeline "long" revision 1: 500 steps in 500 levels'
        assert sum(line.startswith("  [*] ") for line in lines) == 500
        assert "level 500" in lines and "  [*] s499  Test.emit  <- s498" in lines


async def test_bad_inputs_answer_400_in_the_error_shape(settings: Settings) -> None:
    async with running_app(settings) as client:
        root = await login(client, settings.admin_username or "", settings.admin_password or "")
        _, editor = await make_tenant_user(client, root, "acme", "editor")
        pipeline = await make_pipeline(client, editor, "p", [step("a", "Input.file", path="x")])
        stats, viz = "/api/v1/runs/statistics", f"/api/v1/pipelines/{pipeline}/visualize"
        bad: list[tuple[str, dict[str, str], str]] = [
            (stats, {"since": "garbage"}, "since"),
            (stats, {"until": "2024-13-01"}, "until"),
            (stats, {"since": "2024-03-02", "until": "2024-03-01"}, "earlier"),
            (stats, {"since": "2024-03-01", "until": "2024-03-01"}, "earlier"),
            (stats, {"since": "9999-12-31"}, "earlier"),  # after the default until (now)
            (stats, {"since": "2023-01-01", "until": "2024-03-01"}, "366 days"),
            (stats, {"until": "0001-01-05"}, "too early"),
            (stats, {"since": "2024-01-01T00:00:00 02:00"}, "%2B"),  # a + left unencoded
            (stats, {"since": "x" * 65}, "since"),
            (stats, {"since": "0001-01-01T00:00:00+02:00"}, "out of range"),
            (EXPORT, {"until": "9999-12-31T23:00:00-02:00"}, "out of range"),
            (stats, {"pipeline_id": "nope"}, "pipeline_id"),
            (stats, {"min_position": "-1"}, "min_position"),
            (EXPORT, {"format": "xml"}, "format"),
            (EXPORT, {"format": ""}, "format"),
            (EXPORT, {"status": "bogus"}, "status must be one of"),
            (EXPORT, {"since": "2024-03-02", "until": "2024-03-01"}, "earlier"),
            (EXPORT, {"until": "yesterday"}, "until"),
            (EXPORT, {"pipeline_id": "123"}, "pipeline_id"),
            (EXPORT, {"status": "a\x00b"}, "status"),
            (viz, {"revision": "0"}, "revision"),
            (viz, {"revision": "one"}, "revision"),
        ]
        for path, params, mentioned in bad:
            response = await client.get(path, params=params, headers=editor)
            error = assert_error(response, 400, "VALIDATION_ERROR")
            assert mentioned in json.dumps(error), (path, params, error)
        for path in (f"/api/v1/runs/{uuid4()}/visualize", f"/api/v1/pipelines/{uuid4()}/visualize"):
            assert_error(await client.get(path, headers=editor), 404, "RESOURCE_NOT_FOUND")
        # Extreme but valid windows are answered, not crashed on.
        for window in (
            {"since": "0001-01-01", "until": "0001-01-02"},
            {"since": "9999-12-30", "until": "9999-12-31T23:59:59.999999Z"},
        ):
            response = await client.get(stats, params=window, headers=editor)
            assert response.status_code == 200, response.text
            assert response.json()["totals"]["total"] == 0


_T0 = datetime(2024, 1, 1, tzinfo=UTC)


async def test_openapi_documents_the_report_routes(settings: Settings) -> None:
    async with running_app(settings) as client:
        paths = (await client.get("/schema/openapi.json")).json()["paths"]
        statistics = paths["/api/v1/runs/statistics"]["get"]
        assert "default the last 30 days" in statistics["summary"]
        export = paths["/api/v1/runs/export"]["get"]
        assert set(export["responses"]["200"]["content"]) == {"application/x-ndjson", "text/csv"}
        formats = next(p for p in export["parameters"] if p["name"] == "format")
        assert formats["schema"]["enum"] == ["ndjson", "csv"]
        for path in (
            "/api/v1/runs/{run_id}/visualize",
            "/api/v1/pipelines/{pipeline_id}/visualize",
        ):
            assert set(paths[path]["get"]["responses"]["200"]["content"]) == {"text/plain"}
