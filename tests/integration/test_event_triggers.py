"""Event-triggered runs through the whole app (scheduler role's trigger loop, executor,
read models, API): one pipeline's success starts another's run, once; a trigger of
another tenant naming the pipeline never fires; a bad trigger is a 422 naming it. The
decisions (depth, quota, at most once) are tested on the in-memory store:
tests/unit/test_event_triggers.py."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg

from infrastructure.settings import Settings
from tests.integration.api_client import assert_error, running_app
from tests.integration.run_helpers import (
    ALL_ROLES,
    make_pipeline,
    poll,
    run_settings,
    step,
    tenant_editor,
    trigger,
    wait_run,
)

ROLES = ALL_ROLES | {"scheduler"}


async def _runs_of(client: Any, headers: dict[str, str], pipeline_id: str) -> list[dict[str, Any]]:
    listed = await client.get(f"/api/v1/runs?pipeline_id={pipeline_id}", headers=headers)
    assert listed.status_code == 200, listed.text
    return list(listed.json()["items"])


async def test_a_success_starts_the_pipeline_that_triggers_on_it_once(settings: Settings) -> None:
    settings = run_settings(settings)
    async with running_app(settings, roles=ROLES) as client:
        _, editor, _ = await tenant_editor(client, settings)
        _, stranger, _ = await tenant_editor(client, settings, name="globex")
        upstream = await make_pipeline(client, editor, "upstream", step("a", "Test.emit"))
        on_upstream = {
            "on": "norn.run.succeeded",
            "where": {"pipeline_id": upstream},
            "params": {"source": "upstream"},
        }
        downstream = await make_pipeline(
            client, editor, "downstream", step("a", "Test.emit"), triggers=[on_upstream]
        )
        spy = await make_pipeline(
            client, stranger, "spy", step("a", "Test.emit"), triggers=[on_upstream]
        )

        async def shown() -> dict[str, Any] | None:
            got = await client.get(f"/api/v1/pipelines/{downstream}", headers=editor)
            return dict(got.json()) if got.status_code == 200 else None

        assert (await poll(shown, "the pipeline read"))["triggers"] == [on_upstream]

        first = await trigger(client, editor, upstream)
        assert (await wait_run(client, editor, first["run_id"]))["status"] == "succeeded"

        async def started() -> list[dict[str, Any]] | None:
            return await _runs_of(client, editor, downstream) or None

        [triggered] = await poll(started, "the triggered run")
        run = await wait_run(client, editor, triggered["id"])
        assert run["status"] == "succeeded" and run["params"] == {"source": "upstream"}
        assert run["trigger"]["kind"] == "event"
        await asyncio.sleep(1.0)  # time enough for a second start, or the stranger's
        assert len(await _runs_of(client, editor, downstream)) == 1
        assert await _runs_of(client, stranger, spy) == []
        with psycopg.connect(settings.database_url or "") as conn:
            fired = conn.execute(
                "SELECT count(*) FROM norn_events WHERE topic LIKE '%:TriggerFired'"
            ).fetchone()
        assert fired == (1,)


async def test_a_deployments_trigger_runs_its_active_release(settings: Settings) -> None:
    settings = run_settings(settings)
    async with running_app(settings, roles=ROLES) as client:
        _, editor, _ = await tenant_editor(client, settings)
        upstream = await make_pipeline(client, editor, "upstream", step("a", "Test.emit"))
        target = await make_pipeline(client, editor, "target", step("a", "Test.emit"))
        on_upstream = {"on": "norn.run.succeeded", "where": {"pipeline_id": upstream}}
        made = await client.post(
            "/api/v1/deployments",
            json={
                "pipeline_id": target,
                "environment": "staging",
                "variables": {"region": "eu"},
                "triggers": [on_upstream],
            },
            headers=editor,
        )
        assert made.status_code == 201, made.text
        deployment = made.json()["id"]

        first = await trigger(client, editor, upstream)
        assert (await wait_run(client, editor, first["run_id"]))["status"] == "succeeded"

        async def started() -> list[dict[str, Any]] | None:
            listed = await client.get(f"/api/v1/runs?deployment_id={deployment}", headers=editor)
            return list(listed.json()["items"]) or None

        [triggered] = await poll(started, "the deployment's triggered run")
        run = await wait_run(client, editor, triggered["id"])
        assert run["status"] == "succeeded" and run["params"] == {"region": "eu"}
        assert run["trigger"]["kind"] == "event"

        cleared = await client.put(
            f"/api/v1/deployments/{deployment}/triggers", json={"triggers": []}, headers=editor
        )
        assert cleared.status_code == 200, cleared.text
        assert cleared.json()["triggers"] == [] and cleared.json()["position"] is not None
        bad = await client.put(
            f"/api/v1/deployments/{deployment}/triggers",
            json={"triggers": [{"on": "nope"}]},
            headers=editor,
        )
        assert_error(bad, 422, "VALIDATION_ERROR")
        shown = await client.get(
            f"/api/v1/deployments/{deployment}?min_position={cleared.json()['position']}",
            headers=editor,
        )
        assert shown.json()["triggers"] == []


async def test_a_trigger_that_cannot_work_is_refused_with_its_field(settings: Settings) -> None:
    settings = run_settings(settings)
    async with running_app(settings, roles=frozenset({"projector"})) as client:
        _, editor, _ = await tenant_editor(client, settings)
        refused = await client.post(
            "/api/v1/pipelines",
            json={
                "name": "bad",
                "steps": [step("a", "Test.emit")],
                "triggers": [{"on": "run.succeeded"}, {"on": "norn.run.*", "when": {}}],
            },
            headers=editor,
        )
        assert_error(refused, 422, "VALIDATION_ERROR")
        fields = {d["field"] for d in refused.json()["error"]["details"]}
        assert fields & {"triggers[1].when", "triggers[1]"}, fields
        later = await client.post(
            "/api/v1/pipelines",
            json={"name": "bad", "steps": [step("a", "Test.emit")], "triggers": [{"on": "x"}]},
            headers=editor,
        )
        assert_error(later, 422, "VALIDATION_ERROR")
        assert {d["field"] for d in later.json()["error"]["details"]} == {"triggers[0].on"}


async def test_with_no_trigger_anywhere_the_role_passes_events_without_reading_them(
    settings: Settings,
) -> None:
    """The pass moves its tracking position to what the read models reached, so a trigger
    declared later matches only events after it, as when the role reads each one."""
    settings = run_settings(settings)
    async with running_app(settings, roles=frozenset({"projector", "scheduler"})) as client:
        _, editor, _ = await tenant_editor(client, settings)
        created = await client.post(
            "/api/v1/pipelines",
            json={"name": "plain", "steps": [step("a", "Test.emit")]},
            headers=editor,
        )
        assert created.status_code == 201, created.text
        position = int(created.json()["position"])

        async def passed() -> int | None:
            with psycopg.connect(settings.database_url or "") as conn:
                row = conn.execute(
                    "SELECT position FROM event_trigger_tracking WHERE name = 'triggers'"
                ).fetchone()
            return row[0] if row and row[0] >= position else None

        assert await poll(passed, "the trigger role's position") >= position
