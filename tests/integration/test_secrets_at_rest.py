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
    for secret in secrets:
        for form in variants(secret):
            assert form not in stored, f"a secret is stored in the clear ({form[:6]}...)"
