"""Secret values in step configs never leak (issue 14, "What must hold"), and credentials
stored in clear before secret references are redacted everywhere, then shredded.

Real PostgreSQL, NATS JetStream and executor: a pipeline using a secret runs, fails and
is retried; then every answer, the store, every table, the NATS stream, the run's logs
and errors, the audit feed and the application's logs are searched for the value."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
from typing import Any
from uuid import UUID, uuid4

import nats
import psycopg
import pytest

from api.bootstrap import build_container
from api.cli_secrets import secrets_shred_plaintext
from domain.events import CommandContext
from domain.pipeline import Pipeline, PipelineDefinition, StepSpec
from infrastructure.settings import Settings
from projections import ALL_PROJECTIONS
from projections.rebuild import rebuild
from tests.integration.api_client import (
    assert_error,
    make_tenant_user,
    platform_admin,
    running_app,
    serving_app,
    wait_ready,
)
from tests.integration.run_helpers import poll
from tests.integration.run_support import EXECUTING, executing, finished, step, trigger
from tests.integration.test_secrets_at_rest import database_text, variants
from tests.support.webhook_receiver import receiver

VALUE = "tok-Leak-Search-Distinctive-5d2e"
LEGACY = "legacy-Plain-Credential-Distinctive-90af"


async def stream_texts(settings: Settings) -> list[str]:
    """Every message now in the test's NATS event stream."""
    nc = await nats.connect(settings.nats_url or "")
    try:
        js = nc.jetstream()
        info = await js.stream_info(settings.nats_stream)
        texts = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            try:
                texts.append((await js.get_msg(settings.nats_stream, seq)).data.decode())
            except nats.js.errors.NotFoundError:
                continue
        return texts
    finally:
        await nc.close()


async def test_a_secret_used_by_runs_that_fail_and_retry_leaks_nowhere(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = executing(settings)
    async with serving_app(settings, EXECUTING) as client:
        await wait_ready(client)
        root = await platform_admin(client, settings)  # type: ignore[arg-type]
        tenant_id, admin = await make_tenant_user(client, root, "leaks", "admin")  # type: ignore[arg-type]
        made = await client.post(
            "/api/v1/secrets", json={"name": "api-token", "value": VALUE}, headers=admin
        )
        assert made.status_code == 201, made.text
        failing = step("use", "Test.credential", token={"secret": "api-token"}, fail=True)
        failing.update(retries=1, retry_delay=0.01)
        created = await client.post(
            "/api/v1/pipelines", json={"name": "careless", "steps": [failing]}, headers=admin
        )
        assert created.status_code == 201, created.text
        pipeline_id = created.json()["id"]
        run = await finished(client, admin, await trigger(client, admin, pipeline_id))
        assert run["status"] == "failed"
        [used] = run["steps"]
        assert used["attempts"] == 2 and used["error"] == "api.example.com refused token ***"
        retried = await client.post(f"/api/v1/runs/{run['id']}/retry", json={}, headers=admin)
        assert retried.status_code == 202, retried.text
        again = await finished(client, admin, retried.json()["run_id"])
        assert again["status"] == "failed"

        answers = [made.text, created.text, json.dumps(run), json.dumps(again)]
        ids = {
            "pipeline_id": pipeline_id,
            "run_id": run["id"],
            "secret_name": "api-token",
            "revision": "1",
            "tenant_id": tenant_id,
        }
        read = await every_get_route(client, admin, ids)
        assert len(read) > 30, sorted(read)  # the routes were found and answered
        answers.extend(read.values())
        logs_text = read[f"/api/v1/runs/{run['id']}/logs"]
        assert "with ***" in logs_text, logs_text
        exported = await client.get("/api/v1/runs/export", headers=admin)
        answers.append(exported.text)
        # The live feed replayed from the tenant's first event: SSE frames as sent.
        frames = await sse_replay(client, admin, again["id"])
        assert any("norn.run.step_failed.v1" in frame for frame in frames)
        answers.extend(frames)

    texts = {
        "answers": "\n".join(answers),
        "database": database_text(settings.database_url or ""),
        "NATS": "\n".join(await stream_texts(settings)),
        "application logs": caplog.text + "\n".join(str(r.args) for r in caplog.records),
    }
    assert "api-token" in texts["database"] and "api-token" in texts["NATS"]  # scans see
    for form in variants(VALUE):
        for where, text in texts.items():
            assert form not in text, f"the value is in the {where} ({form[:6]}...)"
    assert tenant_id


async def every_get_route(
    client: Any, headers: dict[str, str], ids: dict[str, str]
) -> dict[str, str]:
    """The answer of every GET route of the API (from its OpenAPI document) whose path
    parameters are among `ids`, except the streams, by path."""
    paths = (await client.get("/schema/openapi.json")).json()["paths"]
    read: dict[str, str] = {}
    for template, operations in sorted(paths.items()):
        if "get" not in operations or template.endswith(("/stream", "/ws")):
            continue
        try:
            path = template.format(**ids)
        except KeyError:  # a parameter of another resource: nothing of ours to read
            continue
        response = await client.get(path, headers=headers)
        assert response.status_code < 500, f"{path}: {response.text}"
        read[path] = response.text
    return read


async def sse_replay(client: Any, headers: dict[str, str], last_run: str) -> list[str]:
    """The SSE frames of the tenant's events from its first, up to the last run's end."""
    frames: list[str] = []
    stream = {**headers, "Last-Event-ID": "0"}
    async with client.stream("GET", "/api/v1/events/stream", headers=stream) as response:
        assert response.status_code == 200
        async with asyncio.timeout(20):
            async for line in response.aiter_lines():
                frames.append(line)
                if line.startswith("data:") and last_run in line and "run.failed" in line:
                    return frames
    return frames


def legacy_pipeline(settings: Settings, tenant_id: str) -> UUID:
    """A pipeline saved before secret references: its webhook secret and Authorization
    header in clear (written to the store as an older Norn did, bypassing today's
    refusal)."""
    container = build_container(settings, settings.database_url or "", settings.nats_url or "")
    try:
        send = StepSpec(
            "send",
            "Output.webhook",
            {
                "url": "https://hooks.example.com/in",
                "secret": LEGACY,
                "headers": {"Authorization": f"Bearer {LEGACY}-h", "X-Trace": "kept"},
            },
        )
        pipeline = Pipeline.create(
            pipeline_id=uuid4(),
            tenant_id=tenant_id,
            definition=PipelineDefinition(name="legacy", steps=(send,)),
            check_plugin=lambda step: [],
            ctx=CommandContext("user:old", "corr-old"),
        )
        container.store.append(pipeline)
        return pipeline.id
    finally:
        container.close()


async def test_credentials_stored_in_clear_are_redacted_then_shredded(
    settings: Settings,
) -> None:
    settings = executing(settings)
    async with running_app(settings, EXECUTING) as client:
        root = await platform_admin(client, settings)
        tenant_id, editor = await make_tenant_user(client, root, "legacy", "admin")
        pipeline_id = legacy_pipeline(settings, tenant_id)
        # An older relay published the definition as it was: in clear.
        nc = await nats.connect(settings.nats_url or "")
        await nc.jetstream().publish(
            f"{settings.subject_prefix}.events.{tenant_id}.pipeline.created",
            json.dumps({"data": {"secret": LEGACY}}).encode(),
        )
        await nc.close()

        async def shown() -> dict[str, Any]:
            for _ in range(200):
                got = await client.get(f"/api/v1/pipelines/{pipeline_id}", headers=editor)
                if got.status_code == 200:
                    return dict(got.json())
                await asyncio.sleep(0.05)
            raise AssertionError(got.text)

        config = (await shown())["steps"][0]["config"]
        assert config["secret"] == {"redacted": True}
        assert config["headers"] == {"Authorization": {"redacted": True}, "X-Trace": "kept"}
        revision = await client.get(f"/api/v1/pipelines/{pipeline_id}/revisions/1", headers=editor)
        assert LEGACY not in revision.text and "redacted" in revision.text

        async def audit_items() -> list[dict[str, Any]] | None:
            # The audit trail is its own read model: wait for it to hold the pipeline.
            events = await client.get("/api/v1/events", headers=editor)
            items: list[dict[str, Any]] = events.json()["items"]
            return items if any(e["subject"] == str(pipeline_id) for e in items) else None

        items = await poll(audit_items, "the legacy pipeline in the audit trail")
        created = [e for e in items if e["subject"] == str(pipeline_id)]
        assert created and "redacted" in json.dumps(created[0]["data"]), items
        assert [e for e in items if LEGACY in json.dumps(e)] == []
        assert LEGACY in database_text(settings.database_url or "")  # stored, until shredded

        await asyncio.to_thread(secrets_shred_plaintext, settings, argparse.Namespace())

        assert LEGACY not in database_text(settings.database_url or "")
        assert not [t for t in await stream_texts(settings) if LEGACY in t]
        # History, rollback and replay still work, on the redacted value.
        revised = await client.put(
            f"/api/v1/pipelines/{pipeline_id}",
            json={"name": "legacy", "steps": [step("emit", "Test.emit")]},
            headers=editor,
        )
        assert revised.status_code == 200, revised.text
        back = await client.post(
            f"/api/v1/pipelines/{pipeline_id}/rollback", json={"revision": 1}, headers=editor
        )
        assert back.status_code == 200, back.text
        history = await client.get(f"/api/v1/pipelines/{pipeline_id}/history", headers=editor)
        assert history.status_code == 200, history.text
        assert [h["revision"] for h in history.json()["items"]] == [1, 2, 3]
        run = await finished(client, editor, await trigger(client, editor, pipeline_id))
        assert run["status"] == "failed"
        assert "config.secret of step 'send' was redacted" in run["steps"][0]["error"]

    before = _rows(settings, "SELECT id, steps, revision FROM pipelines ORDER BY id")
    for projection in ALL_PROJECTIONS:
        await rebuild(projection, settings.database_url or "")
    assert _rows(settings, "SELECT id, steps, revision FROM pipelines ORDER BY id") == before
    assert LEGACY not in database_text(settings.database_url or "")


def _rows(settings: Settings, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(settings.database_url or "") as conn:
        return conn.execute(query).fetchall()


async def test_a_step_runs_over_its_connection_with_the_secrets_resolved_there(
    settings: Settings,
) -> None:
    """An http connection holds the base URL and an Authorization header by reference;
    an Output.webhook step names it and gives a relative url and its signing secret by
    reference. The receiver gets both values; nothing else does. A secret limited to
    other hosts is refused at save through the connection, as in a step's own config."""
    settings = dataclasses.replace(executing(settings), allow_private_networks=True)
    async with receiver() as hook, running_app(settings, EXECUTING) as client:
        root = await platform_admin(client, settings)
        _, admin = await make_tenant_user(client, root, "wired", "admin")
        for name, value in (("hook-token", VALUE), ("signing", "sign-Distinctive-3b7c")):
            made = await client.post(
                "/api/v1/secrets", json={"name": name, "value": value}, headers=admin
            )
            assert made.status_code == 201, made.text
        base = hook.url.rsplit("/", 1)[0]
        connection = await client.post(
            "/api/v1/connections",
            json={
                "name": "hooks",
                "type": "http",
                "config": {
                    "base_url": base,
                    "headers": {"Authorization": {"secret": "hook-token"}},
                },
            },
            headers=admin,
        )
        assert connection.status_code == 201, connection.text
        send = step("send", "Output.webhook", "emit", url="in", secret={"secret": "signing"})
        send["connection"] = "hooks"
        created = await client.post(
            "/api/v1/pipelines",
            json={"name": "wired", "steps": [step("emit", "Test.emit", count=2), send]},
            headers=admin,
        )
        assert created.status_code == 201, created.text
        run = await finished(client, admin, await trigger(client, admin, created.json()["id"]))
        assert run["status"] == "succeeded", run
        [delivery] = hook.requests
        assert delivery.headers["authorization"] == VALUE
        assert delivery.headers["x-norn-signature"].startswith("sha256=")

        limited = await client.put(
            "/api/v1/secrets/hook-token",
            json={"value": VALUE, "allowed_hosts": ["hooks.example.com"]},
            headers=admin,
        )
        assert limited.status_code == 200, limited.text
        refused = await client.post(
            "/api/v1/pipelines",
            json={"name": "elsewhere", "steps": [step("emit", "Test.emit"), send]},
            headers=admin,
        )
        error = assert_error(refused, 422, "VALIDATION_ERROR")
        assert "may be sent only to hooks.example.com" in refused.text, error
        shown = await client.get(f"/api/v1/pipelines/{created.json()['id']}", headers=admin)
        assert shown.json()["steps"][1]["connection"] == "hooks"
        assert VALUE not in shown.text
