"""Idempotency-Key over HTTP against the real app: a retried write runs once and gets the
first response back; the key is the principal's own and bound to one request."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
from litestar.testing import AsyncTestClient

from infrastructure.settings import Settings
from tests.integration.api_client import (
    assert_error,
    create_pipeline,
    login,
    make_tenant_user,
    overlapping,
    pipeline_body,
    running_app,
)

BASE = "/api/v1/pipelines"


def events_of_type(settings: Settings, suffix: str) -> int:
    with psycopg.connect(settings.database_url or "") as conn:
        row = conn.execute(
            "SELECT count(*) FROM norn_events WHERE topic LIKE %s", (f"%{suffix}%",)
        ).fetchone()
    assert row is not None
    return int(row[0])


async def editor_of(client: AsyncTestClient, settings: Settings, tenant: str) -> dict[str, str]:
    admin = await login(client, settings.admin_username or "", settings.admin_password or "")
    return (await make_tenant_user(client, admin, tenant, "editor"))[1]


async def test_a_retried_create_returns_the_first_response_and_creates_once(
    settings: Settings,
) -> None:
    async with running_app(settings) as client:
        editor = await editor_of(client, settings, "acme")
        headers = {**editor, "Idempotency-Key": "create-nightly-1"}

        first = await client.post(BASE, json=pipeline_body("nightly"), headers=headers)
        replay = await client.post(BASE, json=pipeline_body("nightly"), headers=headers)

        assert first.status_code == replay.status_code == 201, replay.text
        assert replay.json() == first.json()
        assert replay.headers["idempotent-replayed"] == "true"
        assert "idempotent-replayed" not in first.headers
        assert replay.headers["location"] == first.headers["location"]
        assert events_of_type(settings, "PipelineCreated") == 1
        # Without the key, the same body is a new command (refused: the name is taken).
        again = await client.post(BASE, json=pipeline_body("nightly"), headers=editor)
        assert_error(again, 409, "RESOURCE_CONFLICT")


async def test_a_retried_rollback_makes_one_revision(settings: Settings) -> None:
    async with running_app(settings) as client:
        editor = await editor_of(client, settings, "acme")
        created = await create_pipeline(client, editor, "nightly")
        url = f"{BASE}/{created['id']}"
        revised = await client.put(
            url, json=pipeline_body("nightly", description="v2"), headers=editor
        )
        assert revised.status_code == 200, revised.text
        headers = {**editor, "Idempotency-Key": "roll-1"}

        # Both spellings are one route, so they are one request for the key.
        first = await client.post(f"{url}/rollback", json={"revision": 1}, headers=headers)
        replay = await client.post(f"{url}:rollback", json={"revision": 1}, headers=headers)

        assert first.status_code == replay.status_code == 200
        assert replay.json() == first.json() == {**first.json(), "revision": 3}
        assert events_of_type(settings, "PipelineRolledBack") == 1


async def test_the_key_is_bound_to_one_request_and_freed_by_a_failure(
    settings: Settings,
) -> None:
    async with running_app(settings) as client:
        editor = await editor_of(client, settings, "acme")
        headers = {**editor, "Idempotency-Key": "k-1"}
        invalid = pipeline_body("nightly")
        invalid["steps"][0]["config"] = {}

        failed = await client.post(BASE, json=invalid, headers=headers)
        assert_error(failed, 422, "VALIDATION_ERROR")
        # The failure was not kept: the corrected request may use the same key.
        fixed = await client.post(BASE, json=pipeline_body("nightly"), headers=headers)
        assert fixed.status_code == 201, fixed.text
        # Now the key belongs to that request; another body under it is refused.
        other = await client.post(BASE, json=pipeline_body("other"), headers=headers)
        assert_error(other, 422, "VALIDATION_ERROR")
        assert "different request" in other.json()["error"]["message"]
        assert events_of_type(settings, "PipelineCreated") == 1


async def test_keys_belong_to_their_principal(settings: Settings) -> None:
    async with running_app(settings) as client:
        acme = await editor_of(client, settings, "acme")
        globex = await editor_of(client, settings, "globex")
        responses = [
            await client.post(
                BASE, json=pipeline_body("nightly"), headers={**who, "Idempotency-Key": "same"}
            )
            for who in (acme, globex)
        ]
        assert [r.status_code for r in responses] == [201, 201]
        assert responses[0].json()["id"] != responses[1].json()["id"]
        assert "idempotent-replayed" not in responses[1].headers


async def test_concurrent_duplicates_run_once_and_all_get_the_response(
    settings: Settings,
) -> None:
    async with running_app(settings) as client:
        editor = await editor_of(client, settings, "acme")
        headers = {**editor, "Idempotency-Key": "burst"}
        async with overlapping(client) as raw:
            responses = await asyncio.gather(
                *(raw.post(BASE, json=pipeline_body("nightly"), headers=headers) for _ in range(6))
            )
        assert [r.status_code for r in responses] == [201] * 6, [r.text for r in responses]
        assert len({r.json()["id"] for r in responses}) == 1
        assert events_of_type(settings, "PipelineCreated") == 1


async def test_a_malformed_key_is_400(settings: Settings) -> None:
    async with running_app(settings) as client:
        editor = await editor_of(client, settings, "acme")
        bad: list[Any] = ["", "k" * 256, "with space", "tab\tkey"]
        for key in bad:
            response = await client.post(
                BASE, json=pipeline_body("nightly"), headers={**editor, "Idempotency-Key": key}
            )
            assert_error(response, 400, "VALIDATION_ERROR")
        assert events_of_type(settings, "PipelineCreated") == 0


def as_if_the_process_died(settings: Settings, key: str) -> None:
    """Leave the key as a process killed after its command, before keeping the response,
    leaves it: in flight, its lease run out."""
    with psycopg.connect(settings.database_url or "") as conn:
        conn.execute(
            "UPDATE idempotency_keys SET status = NULL, headers = NULL, body = NULL,"
            " lease_until = now() - interval '1 second' WHERE key = %s",
            (key,),
        )


async def test_a_retry_after_a_crash_answers_what_the_first_attempt_did(
    settings: Settings,
) -> None:
    async with running_app(settings) as client:
        editor = await editor_of(client, settings, "acme")
        created = await create_pipeline(client, editor, "nightly")
        url = f"{BASE}/{created['id']}"
        revised = await client.put(
            url, json=pipeline_body("nightly", description="v2"), headers=editor
        )
        assert revised.status_code == 200, revised.text
        calls = {
            "trigger": (f"{url}/runs", {"params": {"day": "monday"}}),
            "rollback": (f"{url}/rollback", {"revision": 1}),
        }
        for key, (path, body) in calls.items():
            headers = {**editor, "Idempotency-Key": key}
            first = await client.post(path, json=body, headers=headers)
            assert first.status_code in (200, 202), first.text
            as_if_the_process_died(settings, key)

            retry = await client.post(path, json=body, headers=headers)

            assert retry.status_code == first.status_code, retry.text
            assert retry.json() == first.json()
            assert retry.headers["idempotent-replayed"] == "true"
            assert retry.headers.get("location") == first.headers.get("location")
        assert events_of_type(settings, "RunQueued") == 1
        assert events_of_type(settings, "PipelineRolledBack") == 1
