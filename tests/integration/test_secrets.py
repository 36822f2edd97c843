"""Tenant secrets over HTTP (README "Secrets"): CRUD with metadata-only answers, who may
read and write them, isolation between tenants (a guessed name included), the delete
refused while a pipeline references the secret, crypto-shredding in the database, and
the leak search: a secret's values are in no response, event, row, log line or audit
listing.

No plugin accepts a `{"secret": ...}` reference in its config yet (issue 14 item 2), so
the referencing pipeline is a row inserted into the pipelines read model by the test."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import psycopg
import pytest
from litestar.testing import AsyncTestClient

from api.bootstrap import build_container
from api.cli_secrets import secrets_rotate_key
from infrastructure.secret_store import MasterKeys, data_dir_master_keys
from infrastructure.settings import Settings
from tests.integration.api_client import (
    assert_error,
    make_tenant_user,
    platform_admin,
    running_app,
    visible,
)
from tests.integration.test_secrets_at_rest import database_text, variants

BASE = "/api/v1/secrets"
FIRST = "first-Distinctive-s3cret-Q7xZ"
SECOND = "second-Distinctive-s3cret-W4pK"


async def create(
    client: AsyncTestClient, headers: dict[str, str], name: str, value: str, **fields: Any
) -> dict[str, Any]:
    made = await client.post(BASE, json={"name": name, "value": value, **fields}, headers=headers)
    assert made.status_code == 201, made.text
    body: dict[str, Any] = made.json()
    await visible(client, headers, f"{BASE}/{name}", body["position"])
    return body


def reference(settings: Settings, tenant_id: str, pipeline: str, secret: str) -> str:
    """A pipeline whose step config references `secret`, straight into the read model."""
    pipeline_id = str(uuid4())
    steps = [{"name": "call", "plugin": "HTTP.request", "config": {"auth": {"secret": secret}}}]
    now = datetime.now(UTC)
    with psycopg.connect(settings.database_url or "") as conn:
        conn.execute(
            "INSERT INTO pipelines (id, tenant_id, name, steps, revision, version, created_by,"
            " updated_by, created_at, updated_at, position)"
            " VALUES (%s, %s, %s, %s, 1, 1, 'test', 'test', %s, %s, 0)",
            (pipeline_id, tenant_id, pipeline, json.dumps(steps), now, now),
        )
    return pipeline_id


async def test_crud_answers_metadata_only_and_the_leak_search_finds_no_value(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with running_app(settings) as client:
        root = await platform_admin(client, settings)
        tenant_id, admin = await make_tenant_user(client, root, "acme", "admin")
        answers: list[str] = []

        made = await client.post(
            BASE,
            json={
                "name": "db.password",
                "value": FIRST,
                "description": "the warehouse",
                "allowed_hosts": ["db.example.com"],
                "namespaces": ["prod"],
            },
            headers=admin,
        )
        assert made.status_code == 201, made.text
        assert made.headers["location"] == f"{BASE}/db.password"
        assert made.json()["value_version"] == 1 and "value" not in made.json()
        put = await client.put(
            f"{BASE}/db.password", json={"value": SECOND, "description": "rotated"}, headers=admin
        )
        assert put.status_code == 200, put.text
        assert (put.json()["value_version"], put.json()["description"]) == (2, "rotated")
        taken = await client.post(BASE, json={"name": "db.password", "value": "x"}, headers=admin)
        assert_error(taken, 409, "RESOURCE_CONFLICT")
        bad = await client.post(BASE, json={"name": "-bad", "value": FIRST}, headers=admin)
        assert assert_error(bad, 422, "VALIDATION_ERROR")["details"][0]["field"] == "name"
        # An Idempotency-Key would keep a digest of the body, value included: refused.
        keyed = await client.put(
            f"{BASE}/db.password",
            json={"value": SECOND},
            headers={**admin, "Idempotency-Key": "k-1"},
        )
        error = assert_error(keyed, 422, "VALIDATION_ERROR")
        assert "secret value" in error["message"]
        answers += [made.text, put.text, taken.text, bad.text, keyed.text]

        one = await client.get(
            f"{BASE}/db.password", params={"min_position": put.json()["position"]}, headers=admin
        )
        assert one.status_code == 200, one.text
        shown = one.json()
        assert shown["value_version"] == 2 and shown["referenced_by"] == []
        assert shown["allowed_hosts"] == ["db.example.com"] and shown["namespaces"] == ["prod"]
        assert shown["created_by"] == shown["updated_by"] and shown["created_by"]
        listed = await client.get(BASE, headers=admin)
        assert [s["name"] for s in listed.json()["items"]] == ["db.password"]
        events = await client.get(
            "/api/v1/events", params={"min_position": put.json()["position"]}, headers=admin
        )
        assert events.status_code == 200, events.text
        assert "norn.secret.version_added.v1" in events.text
        answers += [one.text, listed.text, events.text]

        stored = database_text(settings.database_url or "")
        assert "db.password" in stored and "the warehouse" in stored  # the scan sees them
        for value in (FIRST, SECOND):
            for form in variants(value):
                for where, text in (("answers", "\n".join(answers)), ("database", stored)):
                    assert form not in text, f"a value is in the {where} ({form[:6]}...)"
                assert form not in caplog.text
                assert all(form not in str(r.args) for r in caplog.records)

        # Resolving (what the executor will do) reads the current value back.
        container = build_container(settings, settings.database_url or "", settings.nats_url or "")
        try:
            assert container.secrets is not None
            assert container.secrets.resolve(tenant_id, "db.password") == SECOND
            assert container.secrets.resolve(tenant_id, "db.password", 1) == FIRST
        finally:
            container.close()


async def test_viewers_and_operators_are_refused_editors_read_admins_write(
    settings: Settings,
) -> None:
    async with running_app(settings) as client:
        root = await platform_admin(client, settings)
        tenant_id, admin = await make_tenant_user(client, root, "acme", "admin")
        await create(client, admin, "token", FIRST)
        for role in ("viewer", "operator", "editor"):
            user = await client.post(
                "/api/v1/users",
                json={
                    "username": f"acme-{role}",
                    "password": "correct-horse-battery-staple",
                    "tenant_id": tenant_id,
                    "roles": [role],
                },
                headers=admin,
            )
            assert user.status_code == 201, user.text
        login = {}
        for role in ("viewer", "operator", "editor"):
            signed = await client.post(
                "/api/v1/auth/login",
                json={"username": f"acme-{role}", "password": "correct-horse-battery-staple"},
            )
            login[role] = {"Authorization": f"Bearer {signed.json()['access_token']}"}
        for role in ("viewer", "operator"):
            for response in (
                await client.get(BASE, headers=login[role]),
                await client.get(f"{BASE}/token", headers=login[role]),
                await client.post(BASE, json={"name": "x", "value": "y"}, headers=login[role]),
            ):
                assert_error(response, 403, "PERMISSION_DENIED")
        editor = login["editor"]
        assert (await client.get(f"{BASE}/token", headers=editor)).status_code == 200
        assert (await client.get(BASE, headers=editor)).json()["items"][0]["name"] == "token"
        for response in (
            await client.post(BASE, json={"name": "x", "value": "y"}, headers=editor),
            await client.put(f"{BASE}/token", json={"value": "y"}, headers=editor),
            await client.delete(f"{BASE}/token", headers=editor),
        ):
            assert_error(response, 403, "PERMISSION_DENIED")


async def test_another_tenant_cannot_see_change_or_delete_a_secret_even_by_name(
    settings: Settings,
) -> None:
    async with running_app(settings) as client:
        root = await platform_admin(client, settings)
        a_id, a = await make_tenant_user(client, root, "tenant-a", "admin")
        b_id, b = await make_tenant_user(client, root, "tenant-b", "admin")
        made = await create(client, a, "shared-name", FIRST)
        for response in (
            await client.get(f"{BASE}/shared-name", headers=b),
            await client.put(f"{BASE}/shared-name", json={"value": SECOND}, headers=b),
            await client.delete(f"{BASE}/shared-name", params={"force": "true"}, headers=b),
        ):
            assert_error(response, 404, "RESOURCE_NOT_FOUND")
        assert (await client.get(BASE, headers=b)).json()["items"] == []
        # B's own secret of the same name is another secret; A's is untouched.
        theirs = await create(client, b, "shared-name", SECOND)
        assert theirs["id"] != made["id"]
        container = build_container(settings, settings.database_url or "", settings.nats_url or "")
        try:
            assert container.secrets is not None
            assert container.secrets.resolve(a_id, "shared-name") == FIRST
            assert container.secrets.resolve(b_id, "shared-name") == SECOND
        finally:
            container.close()


async def test_delete_is_refused_while_referenced_unless_forced_and_shreds_the_key(
    settings: Settings,
) -> None:
    async with running_app(settings) as client:
        root = await platform_admin(client, settings)
        tenant_id, admin = await make_tenant_user(client, root, "acme", "admin")
        other_id, _ = await make_tenant_user(client, root, "other", "admin")
        made = await create(client, admin, "api-token", FIRST)
        pipeline_id = reference(settings, tenant_id, "caller", "api-token")
        reference(settings, other_id, "elsewhere", "api-token")  # another tenant's: not counted

        api = await client.post(
            "/api/v1/connections",
            json={
                "name": "api",
                "type": "http",
                "config": {
                    "base_url": "https://api.example.com",
                    "headers": {"Authorization": {"secret": "api-token"}},
                },
            },
            headers=admin,
        )
        assert api.status_code == 201, api.text

        for _ in range(200):  # the connections read model catches up on its own
            shown = (await client.get(f"{BASE}/api-token", headers=admin)).json()
            if len(shown["referenced_by"]) == 2:
                break
            await asyncio.sleep(0.05)
        assert shown["referenced_by"] == [
            {"id": pipeline_id, "name": "caller", "kind": "pipeline"},
            {"id": api.json()["id"], "name": "api", "kind": "connection"},
        ]
        refused = await client.delete(f"{BASE}/api-token", headers=admin)
        error = assert_error(refused, 409, "RESOURCE_CONFLICT")
        assert "pipeline caller" in error["message"] and "connection api" in error["message"]
        assert "elsewhere" not in error["message"]

        forced = await client.delete(f"{BASE}/api-token", params={"force": "true"}, headers=admin)
        assert forced.status_code == 200, forced.text
        with psycopg.connect(settings.database_url or "") as conn:
            keys = conn.execute(
                "SELECT count(*) FROM secret_keys WHERE secret_id = %s", (made["id"],)
            ).fetchone()
            values = conn.execute(
                "SELECT count(*) FROM secret_values WHERE secret_id = %s", (made["id"],)
            ).fetchone()
        assert keys == (0,) and values == (0,)
        gone = await client.get(
            f"{BASE}/api-token", params={"min_position": forced.json()["position"]}, headers=admin
        )
        assert_error(gone, 404, "RESOURCE_NOT_FOUND")

        # The name is free again: a new secret, later versions, a new data key.
        again = await client.post(BASE, json={"name": "api-token", "value": SECOND}, headers=admin)
        assert again.status_code == 201, again.text
        assert again.json()["value_version"] == 2
        assert again.json()["id"] == made["id"]


async def test_rotate_key_rewraps_every_data_key_and_values_stay_readable(
    settings: Settings,
) -> None:
    async with running_app(settings) as client:
        root = await platform_admin(client, settings)
        tenant_id, admin = await make_tenant_user(client, root, "acme", "admin")
        await create(client, admin, "one", FIRST)
        await create(client, admin, "two", SECOND)
    (old,) = data_dir_master_keys(settings.data_dir)

    assert secrets_rotate_key(settings, argparse.Namespace()) == 0

    new, kept = data_dir_master_keys(settings.data_dir)
    assert kept == old != new
    with psycopg.connect(settings.database_url or "") as conn:
        kids = {row[0] for row in conn.execute("SELECT key_id FROM secret_keys")}
    only_new = MasterKeys([new])
    assert kids == {only_new.current_id}
    # Readable with the new key alone (as NORN_SECRET_KEY): the old one is not needed.
    alone = dataclasses.replace(settings, secret_key=new)
    container = build_container(alone, settings.database_url or "", settings.nats_url or "")
    try:
        assert container.secrets is not None
        assert container.secrets.resolve(tenant_id, "one") == FIRST
        assert container.secrets.resolve(tenant_id, "two") == SECOND
    finally:
        container.close()
