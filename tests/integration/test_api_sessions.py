"""Sessions over HTTP against the real app: refresh-token rotation, logout, a role change
holding on the very next request, an API key that has no session, and signing-key
rotation through the settings and the data dir. What ends a session (reuse of a spent
refresh token, races between processes, password changes, deactivation, its lifetime)
is tested on the in-memory store: tests/unit/test_session_service.py."""

from __future__ import annotations

import dataclasses
from typing import Any

import httpx
import jwt
import pytest
from litestar.testing import AsyncTestClient

from api.cli import main as cli_main
from infrastructure.security import (
    data_dir_keys,
    key_id,
)
from infrastructure.settings import Settings
from tests.integration.api_client import (
    assert_error,
    create_pipeline,
    login,
    make_tenant_user,
    pipeline_body,
    running_app,
)

PASSWORD = "correct-horse-battery-staple"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def sign_in(client: AsyncTestClient, username: str, password: str = PASSWORD) -> Any:
    response = await client.post(
        "/api/v1/auth/login", json={"username": username, "password": password}
    )
    assert response.status_code == 200, response.text
    return response.json()


async def refresh(client: AsyncTestClient | httpx.AsyncClient, refresh_token: str) -> Any:
    return await client.post("/api/v1/auth/refresh", json={"refresh_token": refresh_token})


async def me(client: AsyncTestClient, access_token: str) -> Any:
    return await client.get("/api/v1/auth/me", headers=bearer(access_token))


def session_of(token: str) -> str:
    return str(jwt.decode(token, options={"verify_signature": False})["sid"])


async def assert_dead(client: AsyncTestClient, tokens: dict[str, Any]) -> None:
    """Neither the access nor the refresh token of this pair works any more."""
    assert_error(await me(client, tokens["access_token"]), 401, "AUTHENTICATION_REQUIRED")
    assert_error(await refresh(client, tokens["refresh_token"]), 401, "AUTHENTICATION_REQUIRED")


async def assert_alive(client: AsyncTestClient, tokens: dict[str, Any]) -> None:
    response = await me(client, tokens["access_token"])
    assert response.status_code == 200, response.text


async def tenant_with_user(
    client: AsyncTestClient, settings: Settings, role: str = "editor"
) -> tuple[dict[str, str], str, str]:
    """A tenant whose admin's headers are returned, and a user `alice` with `role` in it:
    (admin headers, tenant id, alice's user id)."""
    root = await login(client, settings.admin_username or "", settings.admin_password or "")
    tenant_id, admin = await make_tenant_user(client, root, "acme", "admin")
    created = await client.post(
        "/api/v1/users",
        json={"username": "alice", "password": PASSWORD, "tenant_id": tenant_id, "roles": [role]},
        headers=admin,
    )
    assert created.status_code == 201, created.text
    return admin, tenant_id, created.json()["id"]


async def test_refresh_returns_a_new_working_pair_each_time(settings: Settings) -> None:
    async with running_app(settings) as client:
        await tenant_with_user(client, settings)
        first = await sign_in(client, "alice")

        second_response = await refresh(client, first["refresh_token"])
        assert second_response.status_code == 200, second_response.text
        second = second_response.json()
        third = (await refresh(client, second["refresh_token"])).json()

        assert second["token_type"] == "bearer"
        assert second["expires_in"] == settings.access_token_ttl
        tokens = {t[k] for t in (first, second, third) for k in ("access_token", "refresh_token")}
        assert len(tokens) == 6
        for pair in (second, third):
            assert (await me(client, pair["access_token"])).json()["username"] == "alice"
        # Access tokens belong to the session, not to a refresh generation: one issued
        # before a refresh keeps working until it expires or the session ends.
        await assert_alive(client, first)
        assert len({session_of(token) for token in tokens}) == 1  # one session throughout


async def test_logout_ends_only_that_session_at_once(settings: Settings) -> None:
    async with running_app(settings) as client:
        await tenant_with_user(client, settings)
        phone = await sign_in(client, "alice")
        laptop = await sign_in(client, "alice")

        out = await client.post("/api/v1/auth/logout", headers=bearer(laptop["access_token"]))

        assert out.status_code == 204, out.text
        assert out.content == b""
        await assert_dead(client, laptop)
        again = await client.post("/api/v1/auth/logout", headers=bearer(laptop["access_token"]))
        assert_error(again, 401, "AUTHENTICATION_REQUIRED")
        await assert_alive(client, phone)
        assert (await refresh(client, phone["refresh_token"])).status_code == 200


async def test_a_role_change_holds_on_the_next_request_with_the_same_token(
    settings: Settings,
) -> None:
    async with running_app(settings) as client:
        admin, _, alice_id = await tenant_with_user(client, settings, role="editor")
        alice = bearer((await sign_in(client, "alice"))["access_token"])
        await create_pipeline(client, alice, "first")

        demoted = await client.put(
            f"/api/v1/users/{alice_id}", json={"roles": ["viewer"]}, headers=admin
        )

        assert demoted.status_code == 200, demoted.text
        write = await client.post("/api/v1/pipelines", json=pipeline_body("second"), headers=alice)
        assert_error(write, 403, "PERMISSION_DENIED")
        assert (await client.get("/api/v1/pipelines", headers=alice)).status_code == 200
        assert (await client.get("/api/v1/auth/me", headers=alice)).json()["roles"] == ["viewer"]

        promoted = await client.put(
            f"/api/v1/users/{alice_id}", json={"roles": ["editor"]}, headers=admin
        )
        assert promoted.status_code == 200, promoted.text
        await create_pipeline(client, alice, "third")


async def test_an_api_key_cannot_log_out(settings: Settings) -> None:
    async with running_app(settings) as client:
        admin, _, _ = await tenant_with_user(client, settings)
        created = await client.post(
            "/api/v1/api-keys", json={"name": "ci", "roles": ["viewer"]}, headers=admin
        )
        assert created.status_code == 201, created.text
        key = created.json()["key"]

        for headers in ({"X-API-Key": key}, bearer(key)):
            response = await client.post("/api/v1/auth/logout", headers=headers)
            # Valid credentials without a session: forbidden, not "authenticate again".
            error = assert_error(response, 403, "PERMISSION_DENIED")
            assert "api-keys" in error["message"]
            assert "www-authenticate" not in response.headers
        assert (await client.get("/api/v1/auth/me", headers={"X-API-Key": key})).status_code == 200


async def test_jwt_key_rotation_keeps_existing_sessions_working(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Configured keys: a new NORN_JWT_SECRET with the old one in NORN_JWT_PREVIOUS_SECRETS
    keeps tokens the old key signed working; dropping it ends them. The data dir's keys
    (no NORN_JWT_SECRET) rotate with `norn jwt rotate` the same way."""
    old_key, new_key = settings.jwt_secret or "", "the-next-signing-key-also-long-enough-4096"
    async with running_app(settings) as client:
        await tenant_with_user(client, settings)
        before = await sign_in(client, "alice")

    rotated = dataclasses.replace(settings, jwt_secret=new_key, jwt_previous_secrets=old_key)
    async with running_app(rotated) as client:
        await assert_alive(client, before)
        after = (await refresh(client, before["refresh_token"])).json()
        assert jwt.get_unverified_header(after["access_token"])["kid"] == key_id(new_key)
        await assert_alive(client, after)

    dropped = dataclasses.replace(settings, jwt_secret=new_key, jwt_previous_secrets=None)
    async with running_app(dropped) as client:
        assert_error(await me(client, before["access_token"]), 401, "AUTHENTICATION_REQUIRED")
        await assert_alive(client, after)

    embedded = dataclasses.replace(settings, jwt_secret=None)
    async with running_app(embedded) as client:
        first = await sign_in(client, "alice")
        kid = jwt.get_unverified_header(first["access_token"])["kid"]
        assert kid == key_id(data_dir_keys(settings.data_dir)[0])
    monkeypatch.delenv("NORN_JWT_SECRET", raising=False)
    monkeypatch.setenv("NORN_DATA_DIR", str(settings.data_dir))
    assert cli_main(["jwt", "rotate"]) == 0
    async with running_app(embedded) as client:
        await assert_alive(client, first)
        second = (await refresh(client, first["refresh_token"])).json()
        assert jwt.get_unverified_header(second["access_token"])["kid"] != kid
