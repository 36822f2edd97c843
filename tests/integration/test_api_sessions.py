"""Sessions over HTTP against the real app: refresh-token rotation, reuse of a spent
refresh token ending the whole family, logout, and password change, deactivation and
role changes holding on the very next request."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import httpx
import jwt
import pytest
from litestar.testing import AsyncTestClient

from api.cli import main as cli_main
from application.api_keys import ApiKeyService
from application.errors import AuthenticationFailed
from application.event_store import NornEventStore
from application.sessions import IssuedTokens, SessionService
from domain.events import CommandContext
from domain.session import Session
from domain.user import User
from infrastructure.api_key_secrets import ApiKeySecrets
from infrastructure.postgres import open_event_store
from infrastructure.security import (
    Argon2PasswordHasher,
    TokenService,
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
NEW_PASSWORD = "tr0ub4dor-and-three-more-words"


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


async def test_a_spent_refresh_token_presented_again_ends_the_whole_family(
    settings: Settings,
) -> None:
    async with running_app(settings) as client:
        await tenant_with_user(client, settings)
        other_session = await sign_in(client, "alice")
        first = await sign_in(client, "alice")
        second = (await refresh(client, first["refresh_token"])).json()
        await assert_alive(client, second)

        reused = await refresh(client, first["refresh_token"])

        error = assert_error(reused, 401, "AUTHENTICATION_REQUIRED")
        assert "already used" in error["message"]
        # The pair issued by the rotation is dead at once, and so is the original one.
        await assert_dead(client, second)
        await assert_dead(client, first)
        # Only that session: the user's other login is untouched.
        await assert_alive(client, other_session)
        assert (await refresh(client, other_session["refresh_token"])).status_code == 200


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


async def test_logout_after_a_refresh_ends_the_refreshed_pair_too(settings: Settings) -> None:
    async with running_app(settings) as client:
        await tenant_with_user(client, settings)
        first = await sign_in(client, "alice")
        second = (await refresh(client, first["refresh_token"])).json()

        out = await client.post("/api/v1/auth/logout", headers=bearer(first["access_token"]))

        assert out.status_code == 204, out.text
        await assert_dead(client, second)


async def test_changing_ones_password_ends_every_session_of_the_user(settings: Settings) -> None:
    async with running_app(settings) as client:
        _, _, alice_id = await tenant_with_user(client, settings)
        phone = await sign_in(client, "alice")
        laptop = await sign_in(client, "alice")
        path = f"/api/v1/users/{alice_id}/password"

        wrong = await client.post(
            path,
            json={"current_password": "not-the-password", "new_password": NEW_PASSWORD},
            headers=bearer(laptop["access_token"]),
        )
        assert wrong.status_code in {401, 403, 422}, wrong.text
        missing = await client.post(
            path, json={"new_password": NEW_PASSWORD}, headers=bearer(laptop["access_token"])
        )
        assert_error(missing, 422, "VALIDATION_ERROR")
        await assert_alive(client, phone)  # a refused change ends nothing

        changed = await client.post(
            path,
            json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
            headers=bearer(laptop["access_token"]),
        )

        assert changed.status_code == 200, changed.text
        await assert_dead(client, laptop)
        await assert_dead(client, phone)
        old = await client.post(
            "/api/v1/auth/login", json={"username": "alice", "password": PASSWORD}
        )
        assert_error(old, 401, "AUTHENTICATION_REQUIRED")
        await assert_alive(client, await sign_in(client, "alice", NEW_PASSWORD))


async def test_an_admin_reset_also_ends_every_session(settings: Settings) -> None:
    async with running_app(settings) as client:
        admin, _, alice_id = await tenant_with_user(client, settings)
        alice = await sign_in(client, "alice")

        reset = await client.post(
            f"/api/v1/users/{alice_id}/password", json={"new_password": NEW_PASSWORD}, headers=admin
        )

        assert reset.status_code == 200, reset.text
        await assert_dead(client, alice)
        await assert_alive(client, await sign_in(client, "alice", NEW_PASSWORD))


async def test_deactivation_ends_sessions_and_reactivation_does_not_revive_them(
    settings: Settings,
) -> None:
    async with running_app(settings) as client:
        admin, _, alice_id = await tenant_with_user(client, settings)
        before = await sign_in(client, "alice")
        path = f"/api/v1/users/{alice_id}"

        off = await client.put(path, json={"active": False}, headers=admin)

        assert off.status_code == 200, off.text
        await assert_dead(client, before)
        refused = await client.post(
            "/api/v1/auth/login", json={"username": "alice", "password": PASSWORD}
        )
        assert_error(refused, 401, "AUTHENTICATION_REQUIRED")

        on = await client.put(path, json={"active": True}, headers=admin)

        assert on.status_code == 200, on.text
        await assert_dead(client, before)
        after = await sign_in(client, "alice")
        await assert_alive(client, after)

        deleted = await client.delete(path, headers=admin)
        assert deleted.status_code in {200, 204}, deleted.text
        await assert_dead(client, after)


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


async def test_refresh_refuses_anything_but_a_live_refresh_token(settings: Settings) -> None:
    secret = settings.jwt_secret or ""
    other_key = "another-secret-that-is-long-enough-for-hs256-xyz"
    async with running_app(settings) as client:
        await tenant_with_user(client, settings)
        tokens = await sign_in(client, "alice")
        claims = jwt.decode(tokens["refresh_token"], options={"verify_signature": False})
        now = int(time.time())

        def signed(key: str, **changes: Any) -> str:
            return jwt.encode({**claims, **changes}, key, "HS256", {"kid": key_id(key)})

        bad = {
            "an access token": tokens["access_token"],
            "garbage": "not.a.jwt",
            "signed with another key": signed(other_key),
            "another key under our kid": jwt.encode(
                claims, other_key, "HS256", {"kid": key_id(secret)}
            ),
            "expired": signed(secret, iat=now - 60, nbf=now - 60, exp=now - 1),
            "alg none": jwt.encode(claims, None, algorithm="none"),
            "unknown session": signed(secret, sid=str(uuid4())),
            "another user's session": signed(secret, sub=str(uuid4())),
        }
        assert (await refresh(client, signed(secret))).status_code == 200  # the control
        for label, token in bad.items():
            response = await refresh(client, token)
            assert response.status_code == 401, (label, response.text)
            assert_error(response, 401, "AUTHENTICATION_REQUIRED")
        empty = await client.post("/api/v1/auth/refresh", json={"refresh_token": ""})
        assert empty.status_code in {400, 422}, empty.text


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


async def test_the_same_refresh_token_presented_concurrently_ends_the_family(
    settings: Settings,
) -> None:
    # Two presentations of one refresh token are a reuse however close together they
    # come: the loser of the race must end the session, not just be refused.
    async with running_app(settings) as client:
        await tenant_with_user(client, settings)
        tokens = await sign_in(client, "alice")

        # The test client runs one request at a time; this transport does not.
        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as raw:
            responses = await asyncio.gather(
                *(refresh(raw, tokens["refresh_token"]) for _ in range(4))
            )

        statuses = sorted(r.status_code for r in responses)
        assert statuses.count(200) <= 1 and set(statuses) <= {200, 401}, statuses
        for response in responses:
            if response.status_code == 200:
                await assert_dead(client, response.json())
        await assert_dead(client, tokens)


async def test_a_refresh_that_loses_a_race_to_another_process_ends_the_family(
    database_url: str, settings: Settings
) -> None:
    # Two API processes take the same refresh token: the second loads the session before
    # the first saves its rotation. Its token's generation is spent by the time it saves,
    # so it must end the session like any reuse, not merely be refused. Forced order,
    # real Postgres: the other process's refresh runs just before this one's append.
    this_store = open_event_store(database_url, pool_size=2)
    other_store = open_event_store(database_url, pool_size=2)
    try:
        this, other = sessions_of(this_store, settings), sessions_of(other_store, settings)
        register(this_store, "alice")
        tokens = this.login("alice", PASSWORD, "corr")
        won: list[IssuedTokens] = []
        save = this_store.append

        def other_process_saves_first(*aggregates: Any, **kwargs: Any) -> int | None:
            if not won:
                won.append(other.refresh(tokens.refresh_token, "corr-other"))
            return save(*aggregates, **kwargs)

        this_store.append = other_process_saves_first  # type: ignore[method-assign]

        with pytest.raises(AuthenticationFailed):
            this.refresh(tokens.refresh_token, "corr-this")

        session = other_store.load(Session, UUID(tokens.session_id), "session")
        assert (session.ended, session.end_reason) == (True, "refresh_token_reuse")
        for service in (this, other):
            with pytest.raises(AuthenticationFailed):
                service.principal_for_token(won[0].access_token)
            with pytest.raises(AuthenticationFailed):
                service.refresh(won[0].refresh_token, "corr-again")
    finally:
        this_store.close()
        other_store.close()


def sessions_of(
    store: NornEventStore, settings: Settings, clock: Callable[[], datetime] | None = None
) -> SessionService:
    tokens = TokenService(
        [settings.jwt_secret or ""],
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        access_ttl=settings.access_token_ttl,
        refresh_ttl=settings.refresh_token_ttl,
    )
    api_keys = ApiKeyService(store, ApiKeySecrets())
    hasher = Argon2PasswordHasher(*settings.password_hash_params())
    if clock is None:
        return SessionService(store, hasher, tokens, api_keys)
    return SessionService(store, hasher, tokens, api_keys, clock)


def register(store: NornEventStore, username: str) -> None:
    user = User.register(
        username=username,
        password_hash=Argon2PasswordHasher(8, 1, 1).hash(PASSWORD),  # cheap: verify reads it
        tenant_id=None,
        roles=("platform_admin",),
        ctx=CommandContext("system:test", "seed"),
    )
    store.append(user)


async def test_a_logout_that_races_a_refresh_still_ends_the_session(
    database_url: str, settings: Settings
) -> None:
    # The client refreshes (in another process) while the user logs out: the logout must
    # not fail with a version conflict and leave the refreshed pair alive.
    this_store = open_event_store(database_url, pool_size=2)
    other_store = open_event_store(database_url, pool_size=2)
    try:
        this, other = sessions_of(this_store, settings), sessions_of(other_store, settings)
        register(this_store, "alice")
        tokens = this.login("alice", PASSWORD, "corr")
        principal = this.principal_for_token(tokens.access_token)
        won: list[IssuedTokens] = []
        save = this_store.append

        def other_process_saves_first(*aggregates: Any, **kwargs: Any) -> int | None:
            if not won:
                won.append(other.refresh(tokens.refresh_token, "corr-other"))
            return save(*aggregates, **kwargs)

        this_store.append = other_process_saves_first  # type: ignore[method-assign]

        assert this.logout(principal, "corr-logout") is not None

        session = other_store.load(Session, UUID(tokens.session_id), "session")
        assert (session.ended, session.end_reason) == (True, "logout")
        with pytest.raises(AuthenticationFailed):
            other.principal_for_token(won[0].access_token)
        with pytest.raises(AuthenticationFailed):
            other.refresh(won[0].refresh_token, "corr-again")
    finally:
        this_store.close()
        other_store.close()


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


async def test_a_session_ends_its_lifetime_after_login_however_often_refreshed(
    database_url: str, settings: Settings
) -> None:
    # Refreshing issues refresh tokens that outlive the session; the session's own expiry
    # (NORN_REFRESH_TOKEN_TTL after login) still ends it. Checked with a later clock.
    store = open_event_store(database_url, pool_size=2)
    try:
        now = sessions_of(store, settings)
        register(store, "alice")
        tokens = now.refresh(now.login("alice", PASSWORD, "corr").refresh_token, "corr")
        lifetime = timedelta(seconds=settings.refresh_token_ttl)
        just_before = sessions_of(store, settings, lambda: datetime.now(UTC) + lifetime * 0.99)
        after = sessions_of(store, settings, lambda: datetime.now(UTC) + lifetime)

        assert just_before.principal_for_token(tokens.access_token).name == "alice"
        with pytest.raises(AuthenticationFailed):
            after.principal_for_token(tokens.access_token)
        with pytest.raises(AuthenticationFailed):
            after.refresh(tokens.refresh_token, "corr-late")
        assert just_before.refresh(tokens.refresh_token, "corr-in-time").refresh_token
    finally:
        store.close()
