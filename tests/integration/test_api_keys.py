"""API keys over HTTP against the real app: created once, used by machines through
X-API-Key or a nrn_ bearer token, listed as metadata only, revoked at once, confined to
their tenant, never granting more than their creator holds, never stored in plaintext.
One app serves the module (each test in tenants of its own), but for the test that
counts what the whole database holds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import psycopg
from litestar.testing import AsyncTestClient
from psycopg import sql

from domain.api_key import ApiKey
from domain.events import CommandContext
from infrastructure.api_key_secrets import ApiKeySecrets
from infrastructure.settings import Settings
from tests.integration.api_client import (
    assert_error,
    create_pipeline,
    login,
    make_tenant_user,
    running_app,
    unique,
)

BASE = "/api/v1/api-keys"


async def admin_of(client: AsyncTestClient, settings: Settings) -> dict[str, str]:
    return await login(client, settings.admin_username or "", settings.admin_password or "")


async def new_key(
    client: AsyncTestClient, headers: dict[str, str], roles: list[str], **fields: Any
) -> dict[str, Any]:
    body = {"name": "ci", "roles": roles, **fields}
    response = await client.post(BASE, json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def as_key(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


def as_bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_create_use_list_and_revoke_a_key(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    root = await admin_of(client, module_settings)
    tenant_id, admin = await make_tenant_user(client, root, unique("acme"), "admin")
    expires = (datetime.now(UTC) + timedelta(days=30)).isoformat()

    created = await new_key(client, admin, ["editor"], name="deployer", expires_at=expires)

    key = created["key"]
    assert key.startswith(f"nrn_{created['prefix']}_")
    assert len(key.split("_", 2)[2]) >= 43  # 32 random bytes
    assert created["roles"] == ["editor"]
    assert created["tenant_id"] == tenant_id
    assert created["revoked"] is False
    me = (await client.get("/api/v1/auth/me", headers=admin)).json()
    assert created["created_by"] == f"user:{me['id']}"

    # Both headers authenticate, as the key: its events record actor api_key:<id>.
    pipeline = await create_pipeline(client, as_key(key), "nightly")
    got = await client.get(
        f"/api/v1/pipelines/{pipeline['id']}?min_position={pipeline['position']}",
        headers=as_bearer(key),
    )
    assert got.status_code == 200, got.text
    assert got.json()["created_by"] == f"api_key:{created['id']}"
    who = (await client.get("/api/v1/auth/me", headers=as_bearer(key))).json()
    assert who == {
        "id": created["id"],
        "username": "deployer",
        "tenant_id": tenant_id,
        "roles": ["editor"],
        "kind": "api_key",
    }
    # An editor key may not manage keys.
    assert_error(await client.get(BASE, headers=as_key(key)), 403, "PERMISSION_DENIED")

    listed = await client.get(f"{BASE}?min_position={created['position']}", headers=admin)
    assert listed.status_code == 200, listed.text
    (item,) = listed.json()["items"]
    assert set(item) == {
        "id",
        "tenant_id",
        "name",
        "prefix",
        "roles",
        "created_at",
        "created_by",
        "last_used_at",
        "expires_at",
        "revoked",
        "revoked_at",
    }
    assert item["id"] == created["id"] and item["prefix"] == created["prefix"]
    assert item["last_used_at"] is not None
    assert datetime.fromisoformat(item["expires_at"]) == datetime.fromisoformat(expires)
    assert key not in listed.text and key.split("_", 2)[2] not in listed.text
    one = await client.get(f"{BASE}/{created['id']}", headers=admin)
    assert one.status_code == 200 and one.headers["etag"] == '"1"'
    assert key.split("_", 2)[2] not in one.text

    revoked = await client.delete(f"{BASE}/{created['id']}", headers=admin)
    assert revoked.status_code == 204, revoked.text
    # The very next request with it fails, whatever the read model's lag.
    for headers in (as_key(key), as_bearer(key)):
        error = assert_error(
            await client.get("/api/v1/pipelines", headers=headers),
            401,
            "AUTHENTICATION_REQUIRED",
        )
        assert key not in error["message"]
    again = await client.delete(f"{BASE}/{created['id']}", headers=admin)
    assert again.status_code == 204  # idempotent: no second event

    # A later write's position covers the revocation in the read model.
    later = await new_key(client, admin, ["viewer"], name="later")
    shown = await client.get(
        f"{BASE}/{created['id']}?min_position={later['position']}", headers=admin
    )
    assert shown.json()["revoked"] is True and shown.json()["revoked_at"]
    assert shown.headers["etag"] == '"2"'


async def test_an_expired_key_is_refused(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    root = await admin_of(client, module_settings)
    tenant_id, _ = await make_tenant_user(client, root, unique("acme"), "admin")
    # Given a key created two hours ago that expired an hour ago.
    container = client.app.state.container
    secrets = ApiKeySecrets()
    prefix, secret = secrets.new_key()
    two_hours_ago = datetime.now(UTC) - timedelta(hours=2)
    expired = ApiKey.create(
        tenant_id=tenant_id,
        name="old",
        prefix=prefix,
        secret_hash=secrets.hash(prefix, secret),
        roles=("viewer",),
        expires_at=two_hours_ago + timedelta(hours=1),
        now=two_hours_ago,
        ctx=CommandContext("system:test", "corr"),
    )
    container.store.append(expired)

    response = await client.get("/api/v1/pipelines", headers=as_key(f"nrn_{prefix}_{secret}"))

    assert_error(response, 401, "AUTHENTICATION_REQUIRED")


async def test_a_key_sees_nothing_of_another_tenant(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    root = await admin_of(client, module_settings)
    _, admin_a = await make_tenant_user(client, root, unique("tenant-a"), "admin")
    _, admin_b = await make_tenant_user(client, root, unique("tenant-b"), "admin")
    key_a = (await new_key(client, admin_a, ["editor"]))["key"]
    key_b = await new_key(client, admin_b, ["viewer"])
    pipeline_b = await create_pipeline(client, admin_b, "b-only")

    got = await client.get(f"/api/v1/pipelines/{pipeline_b['id']}", headers=as_key(key_a))
    listed = await client.get(
        f"/api/v1/pipelines?min_position={pipeline_b['position']}", headers=as_key(key_a)
    )

    assert_error(got, 404, "RESOURCE_NOT_FOUND")
    assert listed.status_code == 200 and listed.json()["items"] == []
    # Tenant A's admin cannot see or revoke tenant B's key either.
    keys_a = await client.get(f"{BASE}?min_position={key_b['position']}", headers=admin_a)
    assert [k["name"] for k in keys_a.json()["items"]] == ["ci"]
    assert key_b["id"] not in keys_a.text
    assert_error(
        await client.get(f"{BASE}/{key_b['id']}", headers=admin_a), 404, "RESOURCE_NOT_FOUND"
    )
    assert_error(
        await client.delete(f"{BASE}/{key_b['id']}", headers=admin_a),
        404,
        "RESOURCE_NOT_FOUND",
    )
    assert_error(
        await client.delete(f"{BASE}/{uuid4()}", headers=admin_a), 404, "RESOURCE_NOT_FOUND"
    )
    # B's key still works: the attempted revocation did nothing.
    still = await client.get("/api/v1/pipelines", headers=as_key(key_b["key"]))
    assert still.status_code == 200, still.text


async def test_nobody_creates_a_key_above_their_own_roles(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    root = await admin_of(client, module_settings)
    tenant_id, admin = await make_tenant_user(client, root, unique("acme"), "admin")
    _, editor = await make_tenant_user(client, root, unique("acme2"), "editor")
    admin_key = (await new_key(client, admin, ["admin"]))["key"]

    attempts = [
        (admin, ["platform_admin"]),
        (admin, ["viewer", "platform_admin"]),
        (editor, ["editor"]),  # editors lack api_keys:write
        (editor, ["viewer"]),
        (as_key(admin_key), ["viewer"]),  # a key cannot mint keys
        (root, ["viewer"]),  # a platform admin must act in a tenant
        ({**root, "X-Tenant-ID": tenant_id}, ["platform_admin"]),
    ]
    for headers, roles in attempts:
        response = await client.post(BASE, json={"name": "x", "roles": roles}, headers=headers)
        assert_error(response, 403, "PERMISSION_DENIED")

    # Allowed: an admin's editor key, and a platform admin acting in the tenant.
    assert (await new_key(client, admin, ["editor"]))["roles"] == ["editor"]
    in_tenant = await new_key(client, {**root, "X-Tenant-ID": tenant_id}, ["admin"])
    assert in_tenant["tenant_id"] == tenant_id


async def test_bad_requests_are_validation_errors(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    root = await admin_of(client, module_settings)
    _, admin = await make_tenant_user(client, root, unique("acme"), "admin")
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    for body, status in [
        ({"name": "x", "roles": []}, 422),
        ({"name": "x", "roles": ["viewer"], "expires_at": past}, 422),
        # In UTC, the year 10000: stored, it left the tenant's list answering 500.
        ({"name": "x", "roles": ["viewer"], "expires_at": "9999-12-31T23:59:59-14:00"}, 422),
        # Well-formed bodies with invalid fields are all 422 (README "Errors").
        ({"name": "x", "roles": ["owner"]}, 422),
        ({"name": "", "roles": ["viewer"]}, 422),
        ({"name": "x", "roles": ["viewer"], "secret": "mine"}, 422),
    ]:
        response = await client.post(BASE, json=body, headers=admin)
        assert_error(response, status, "VALIDATION_ERROR")
    listed = await client.get(BASE, headers=admin)
    assert listed.status_code == 200 and listed.json()["items"] == [], listed.text


async def test_malformed_or_wrong_keys_are_refused(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    root = await admin_of(client, module_settings)
    _, admin = await make_tenant_user(client, root, unique("acme"), "admin")
    real = (await new_key(client, admin, ["viewer"]))["key"]
    prefix = real.split("_")[1]
    secret = real.split("_", 2)[2]
    wrong_secret = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    candidates = [
        as_key("garbage"),
        as_key(""),
        as_key("xyz_" + real[4:]),  # wrong scheme prefix
        as_key(f"nrn_zzzzzzzzzz_{secret}"),  # no such key
        as_key(f"nrn_{prefix}_{wrong_secret}"),  # right prefix, wrong secret
        as_bearer(f"nrn_{prefix}_{wrong_secret}"),
        as_bearer("nrn_garbage"),
    ]
    for headers in candidates:
        response = await client.get("/api/v1/pipelines", headers=headers)
        error = assert_error(response, 401, "AUTHENTICATION_REQUIRED")
        assert response.headers["www-authenticate"] == "Bearer"
        assert secret not in error["message"]
    assert (await client.get("/api/v1/pipelines", headers=as_key(real))).status_code == 200


async def test_the_create_route_refuses_an_idempotency_key(settings: Settings) -> None:
    async with running_app(settings) as client:
        root = await admin_of(client, settings)
        _, admin = await make_tenant_user(client, root, "acme", "admin")

        response = await client.post(
            BASE,
            json={"name": "ci", "roles": ["viewer"]},
            headers={**admin, "Idempotency-Key": "key-1"},
        )

        error = assert_error(response, 422, "VALIDATION_ERROR")
        assert "Idempotency-Key" in error["message"]
        with psycopg.connect(settings.database_url or "") as conn:
            stored = conn.execute("SELECT count(*) FROM idempotency_keys").fetchone()
            created = conn.execute(
                "SELECT count(*) FROM norn_events WHERE topic LIKE '%ApiKeyCreated'"
            ).fetchone()
        assert stored == (0,) and created == (0,)
        # Revocation stores no secret: it accepts the header as every write does.
        key = await new_key(client, admin, ["viewer"])
        revoked = await client.delete(
            f"{BASE}/{key['id']}", headers={**admin, "Idempotency-Key": "revoke-1"}
        )
        assert revoked.status_code == 204


async def test_neither_key_nor_secret_is_anywhere_in_the_database(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    root = await admin_of(client, module_settings)
    _, admin = await make_tenant_user(client, root, unique("acme"), "admin")
    created = await new_key(client, admin, ["editor"], name="scanner")
    key, secret = created["key"], created["key"].split("_", 2)[2]
    await create_pipeline(client, as_key(key), "made-by-key")
    await client.get(f"{BASE}?min_position={created['position']}", headers=admin)

    with psycopg.connect(module_settings.database_url or "") as conn:
        states = [bytes(row[0]) for row in conn.execute("SELECT state FROM norn_events").fetchall()]
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
            ).fetchall()
        ]
        dumps = {
            table: "\n".join(
                str(row[0])
                for row in conn.execute(
                    sql.SQL("SELECT t::text FROM {} t").format(sql.Identifier(table))
                ).fetchall()
            )
            for table in tables
        }

    assert any(b'"secret_hash":"sha256:' in state for state in states)  # only the hash
    for state in states:
        assert key.encode() not in state and secret.encode() not in state
    assert {"api_keys", "api_key_usage", "idempotency_keys"} <= set(dumps)
    assert created["prefix"] in dumps["api_keys"]  # the scan does see the read model
    for table, text in dumps.items():
        assert key not in text, table
        assert secret not in text, table
    assert "sha256:" not in dumps["api_keys"]


async def test_a_key_acts_for_its_creator_as_the_creator_is_now(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    root = await admin_of(client, module_settings)
    _, admin = await make_tenant_user(client, root, unique("acme"), "admin")
    creator = (await client.get("/api/v1/auth/me", headers=admin)).json()["id"]
    key = as_key((await new_key(client, admin, ["editor"]))["key"])
    assert (
        await client.post("/api/v1/pipelines", json=_body("one"), headers=key)
    ).status_code == 201

    async def set_creator(**fields: Any) -> None:
        changed = await client.put(f"/api/v1/users/{creator}", json=fields, headers=root)
        assert changed.status_code == 200, changed.text

    # Demoted to viewer: the key keeps only what its creator still holds.
    await set_creator(roles=["viewer"])
    assert (await client.get("/api/v1/pipelines", headers=key)).status_code == 200
    denied = await client.post("/api/v1/pipelines", json=_body("two"), headers=key)
    assert_error(denied, 403, "PERMISSION_DENIED")
    await set_creator(roles=["admin"])
    assert (
        await client.post("/api/v1/pipelines", json=_body("two"), headers=key)
    ).status_code == 201

    # Deactivated: the key stops at once, and works again with its creator.
    await set_creator(active=False)
    assert_error(await client.get("/api/v1/pipelines", headers=key), 401, "AUTHENTICATION_REQUIRED")
    await set_creator(active=True)
    assert (await client.get("/api/v1/pipelines", headers=key)).status_code == 200

    # Deleted: for good.
    deleted = await client.delete(f"/api/v1/users/{creator}", headers=root)
    assert deleted.status_code == 200, deleted.text
    assert_error(await client.get("/api/v1/pipelines", headers=key), 401, "AUTHENTICATION_REQUIRED")


def _body(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "steps": [{"name": "read", "plugin": "Input.file", "config": {"path": "in.jsonl"}}],
    }
