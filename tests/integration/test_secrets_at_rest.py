"""Secrets at rest: after real use of the API, nothing in the database (events, read
models, any table) holds a plaintext password, token or key."""

from __future__ import annotations

import base64
from typing import Any

import psycopg
from psycopg import sql

from infrastructure.settings import Settings
from tests.integration.api_client import login, make_tenant_user, running_app


def database_text(database_url: str) -> str:
    """Every value of every column of every table in the public schema, as text; bytea
    also decoded as UTF-8 and as the bytes' hex, so secrets inside pickled or JSON event
    state are found too."""
    parts: list[str] = []
    with psycopg.connect(database_url) as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
        ).fetchall()
        for (table,) in tables:
            for row in conn.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(table))):
                parts.extend(_texts(row))
    return "\n".join(parts)


def _texts(row: tuple[Any, ...]) -> list[str]:
    out = []
    for value in row:
        if isinstance(value, bytes | bytearray | memoryview):
            raw = bytes(value)
            out.append(raw.decode("utf-8", "replace"))
            out.append(raw.hex())
        else:
            out.append(str(value))
    return out


def variants(secret: str) -> list[str]:
    """The secret and the encodings it could hide in."""
    raw = secret.encode()
    return [
        secret,
        raw.hex(),
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode(),
    ]


async def test_no_plaintext_password_or_token_is_stored(settings: Settings) -> None:
    secrets: list[str] = [settings.admin_password or ""]
    async with running_app(settings) as client:
        root_login = await client.post(
            "/api/v1/auth/login",
            json={"username": settings.admin_username, "password": settings.admin_password},
        )
        tokens = root_login.json()
        secrets += [tokens["access_token"], tokens["refresh_token"]]
        root = await login(client, settings.admin_username or "", settings.admin_password or "")
        await make_tenant_user(client, root, "acme", "admin")
        secrets.append("correct-horse-battery-staple")  # make_tenant_user's password

    stored = database_text(settings.database_url or "")

    assert "acme-admin" in stored  # the scan does see the data
    # The app hashes at the cost its settings give (the tests' cheap one here).
    assert f"$argon2id$v=19${settings.password_hash_cost}$" in stored
    for secret in secrets:
        for form in variants(secret):
            assert form not in stored, f"a secret is stored in the clear ({form[:6]}...)"


async def test_no_secret_of_sessions_passwords_or_api_keys_is_stored(settings: Settings) -> None:
    """After logins, refreshes, a logout, password changes (own and by an admin), failed
    logins (one with a password typed as the username) and API key creation, no
    password, access token, refresh token, token signature, API key secret or JWT
    signing key is anywhere in the database."""
    old_password, own_new, reset_new = (
        "correct-horse-battery-staple",
        "first-new-passphrase-8812",
        "second-new-passphrase-3301",
    )
    typed_as_username = "my-Secret-passphrase-typed-in-the-wrong-box"
    secrets: list[str] = [
        settings.admin_password or "",
        settings.jwt_secret or "",
        old_password,
        own_new,
        reset_new,
        typed_as_username,
    ]
    async with running_app(settings) as client:

        async def sign_in(username: str, password: str) -> dict[str, Any]:
            response = await client.post(
                "/api/v1/auth/login", json={"username": username, "password": password}
            )
            assert response.status_code == 200, response.text
            pair: dict[str, Any] = response.json()
            secrets.extend([pair["access_token"], pair["refresh_token"]])
            return pair

        root = await login(client, settings.admin_username or "", settings.admin_password or "")
        _, admin = await make_tenant_user(client, root, "acme", "admin")
        me = (await client.get("/api/v1/auth/me", headers=admin)).json()

        pair = await sign_in("acme-admin", old_password)
        for _ in range(3):
            refreshed = await client.post(
                "/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}
            )
            assert refreshed.status_code == 200, refreshed.text
            pair = refreshed.json()
            secrets.extend([pair["access_token"], pair["refresh_token"]])
        bearer = {"Authorization": f"Bearer {pair['access_token']}"}

        created = await client.post(
            "/api/v1/api-keys", json={"name": "ci", "roles": ["viewer"]}, headers=bearer
        )
        assert created.status_code == 201, created.text
        key = created.json()["key"]
        secrets.extend([key, key.split("_", 2)[2]])
        assert (await client.get("/api/v1/auth/me", headers={"X-API-Key": key})).status_code == 200

        changed = await client.post(
            f"/api/v1/users/{me['id']}/password",
            json={"current_password": old_password, "new_password": own_new},
            headers=bearer,
        )
        assert changed.status_code == 200, changed.text
        pair = await sign_in("acme-admin", own_new)
        logout = await client.post(
            "/api/v1/auth/logout", headers={"Authorization": f"Bearer {pair['access_token']}"}
        )
        assert logout.status_code == 204, logout.text
        reset = await client.post(
            f"/api/v1/users/{me['id']}/password", json={"new_password": reset_new}, headers=root
        )
        assert reset.status_code == 200, reset.text
        await sign_in("acme-admin", reset_new)
        for username, password in (
            ("acme-admin", "a-wrong-password-4471"),
            (typed_as_username, "another-wrong-one-5512"),
        ):
            failed = await client.post(
                "/api/v1/auth/login", json={"username": username, "password": password}
            )
            assert failed.status_code == 401, failed.text
            secrets.append(password)

    stored = database_text(settings.database_url or "")

    assert "acme-admin" in stored  # the scan does see the data
    assert "address:" in stored  # and the login throttle's table
    # A token's signature alone would let nobody in, but it is still the token's secret part.
    secrets.extend(t.rsplit(".", 1)[1] for t in list(secrets) if t.count(".") == 2)
    folded = stored.casefold()  # a username is kept case-folded, if at all
    for secret in secrets:
        assert secret
        assert secret.casefold() not in folded, f"a secret is stored ({secret[:6]}...)"
        for form in variants(secret):
            assert form not in stored, f"a secret is stored in the clear ({form[:6]}...)"
