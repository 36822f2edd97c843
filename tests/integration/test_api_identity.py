"""Login, bearer tokens, tenants and users over HTTP against the real app."""

from __future__ import annotations

import base64
import json
import time
from typing import Any
from uuid import uuid4

import jwt

from infrastructure.security import key_id
from infrastructure.settings import Settings
from tests.integration.api_client import assert_error, login, make_tenant_user, running_app

PASSWORD = "correct-horse-battery-staple"


def _sign(claims: dict[str, Any], secret: str, **header: Any) -> str:
    return jwt.encode(claims, secret, algorithm="HS256", headers={"kid": key_id(secret), **header})


def _tamper(token: str, **changes: Any) -> str:
    """The token with its payload changed but its signature kept."""
    head, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    raw = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{head}.{raw}.{signature}"


async def test_login_issues_bearer_tokens_and_me_describes_the_caller(settings: Settings) -> None:
    async with running_app(settings) as client:
        response = await client.post(
            "/api/v1/auth/login",
            json={"username": settings.admin_username, "password": settings.admin_password},
        )
        assert response.status_code == 200, response.text
        tokens = response.json()
        assert tokens["token_type"] == "bearer"
        assert tokens["expires_in"] == settings.access_token_ttl
        assert tokens["access_token"] and tokens["refresh_token"]
        assert tokens["access_token"] != tokens["refresh_token"]

        me = await client.get(
            "/api/v1/auth/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
        )
        assert me.status_code == 200, me.text
        body = me.json()
        assert body["username"] == settings.admin_username
        assert body["tenant_id"] is None
        assert body["roles"] == ["platform_admin"]
        assert body["id"]

        admin = await login(client, settings.admin_username or "", settings.admin_password or "")
        tenant_id, editor = await make_tenant_user(client, admin, "acme", "editor")
        me = (await client.get("/api/v1/auth/me", headers=editor)).json()
        assert me == {
            "id": me["id"],
            "username": "acme-editor",
            "tenant_id": tenant_id,
            "roles": ["editor"],
            "kind": "user",
        }
        assert me["id"] != body["id"]


async def test_wrong_password_and_unknown_user_fail_alike(settings: Settings) -> None:
    async with running_app(settings) as client:
        wrong = await client.post(
            "/api/v1/auth/login",
            json={"username": settings.admin_username, "password": "not-the-password"},
        )
        unknown = await client.post(
            "/api/v1/auth/login", json={"username": "nobody-here", "password": "whatever-123"}
        )
        a = assert_error(wrong, 401, "AUTHENTICATION_REQUIRED")
        b = assert_error(unknown, 401, "AUTHENTICATION_REQUIRED")
        assert a["message"] == b["message"]
        assert a["details"] == b["details"] == []


async def test_bad_tokens_are_rejected(settings: Settings) -> None:
    secret = settings.jwt_secret or ""
    other_key = "another-secret-that-is-long-enough-for-hs256-xyz"
    async with running_app(settings) as client:
        admin = await login(client, settings.admin_username or "", settings.admin_password or "")
        real = admin["Authorization"].removeprefix("Bearer ")
        claims = jwt.decode(real, options={"verify_signature": False})
        now = int(time.time())

        def variant(**changes: Any) -> dict[str, Any]:
            return {**claims, **changes}

        forged = {
            "no token": None,
            "not bearer": "Basic cm9vdDpwdw==",
            "empty bearer": "Bearer ",
            "garbage": "Bearer not.a.jwt",
            "other key": "Bearer "
            + jwt.encode(claims, other_key, "HS256", {"kid": key_id(secret)}),
            "other key, its own kid": "Bearer " + _sign(claims, other_key),
            "alg none": "Bearer " + jwt.encode(claims, None, algorithm="none"),
            "no kid": "Bearer " + jwt.encode(claims, secret, algorithm="HS256"),
            "tampered payload": "Bearer " + _tamper(real, tid=str(uuid4())),
            "expired": "Bearer "
            + _sign(variant(iat=now - 900, nbf=now - 900, exp=now - 1), secret),
            "wrong audience": "Bearer " + _sign(variant(aud="other"), secret),
            "wrong issuer": "Bearer " + _sign(variant(iss="other"), secret),
            "refresh as access": "Bearer " + _sign(variant(typ="refresh", gen=1), secret),
            "no expiry": "Bearer " + _sign({k: v for k, v in claims.items() if k != "exp"}, secret),
            "no session": "Bearer "
            + _sign({k: v for k, v in claims.items() if k != "sid"}, secret),
            "unknown session": "Bearer " + _sign(variant(sid=str(uuid4())), secret),
            "unknown user": "Bearer " + _sign(variant(sub=str(uuid4())), secret),
        }
        # The control: the same claims signed with the right key are accepted.
        ok = await client.get(
            "/api/v1/auth/me", headers={"Authorization": f"Bearer {_sign(claims, secret)}"}
        )
        assert ok.status_code == 200, ok.text
        for label, header in forged.items():
            headers = {"Authorization": header} if header else {}
            for path in ("/api/v1/auth/me", "/api/v1/pipelines", "/api/v1/tenants"):
                response = await client.get(path, headers=headers)
                assert response.status_code == 401, (label, path, response.text)
                assert_error(response, 401, "AUTHENTICATION_REQUIRED")
                assert response.headers.get("www-authenticate", "").startswith("Bearer")


async def test_platform_admin_creates_tenants_and_users(settings: Settings) -> None:
    async with running_app(settings) as client:
        admin = await login(client, settings.admin_username or "", settings.admin_password or "")
        created = await client.post(
            "/api/v1/tenants", json={"name": "acme", "plan": "pro"}, headers=admin
        )
        assert created.status_code == 201, created.text
        tenant = created.json()
        assert tenant["id"] and tenant["name"] == "acme" and tenant["plan"] == "pro"
        assert isinstance(tenant["position"], int)

        for name in ("acme", " ACME "):
            dup = await client.post("/api/v1/tenants", json={"name": name}, headers=admin)
            error = assert_error(dup, 409, "RESOURCE_CONFLICT")
            assert error["details"] == [{"field": "name", "message": "already taken"}]

        listed = await client.get(
            "/api/v1/tenants", params={"min_position": tenant["position"]}, headers=admin
        )
        assert listed.status_code == 200, listed.text
        assert [t["name"] for t in listed.json()["items"]] == ["acme"]

        user = await client.post(
            "/api/v1/users",
            json={
                "username": "alice",
                "password": PASSWORD,
                "tenant_id": tenant["id"],
                "roles": ["editor", "operator"],
            },
            headers=admin,
        )
        assert user.status_code == 201, user.text
        assert user.json()["tenant_id"] == tenant["id"]
        assert sorted(user.json()["roles"]) == ["editor", "operator"]
        me = await client.get("/api/v1/auth/me", headers=await login(client, "alice", PASSWORD))
        assert sorted(me.json()["roles"]) == ["editor", "operator"]

        again = await client.post(
            "/api/v1/users",
            json={"username": "Alice", "password": PASSWORD, "tenant_id": tenant["id"]},
            headers=admin,
        )
        assert_error(again, 409, "RESOURCE_CONFLICT")
        missing_tenant = await client.post(
            "/api/v1/users",
            json={"username": "bob", "password": PASSWORD, "tenant_id": str(uuid4())},
            headers=admin,
        )
        assert_error(missing_tenant, 422, "VALIDATION_ERROR")


async def test_weak_passwords_are_refused(settings: Settings) -> None:
    async with running_app(settings) as client:
        admin = await login(client, settings.admin_username or "", settings.admin_password or "")
        tenant_id, _ = await make_tenant_user(client, admin, "acme", "viewer")
        for password in ("short", "carol-is-my-name-ok"):
            response = await client.post(
                "/api/v1/users",
                json={"username": "carol", "password": password, "tenant_id": tenant_id},
                headers=admin,
            )
            error = assert_error(response, 422, "VALIDATION_ERROR")
            assert [d["field"] for d in error["details"]] == ["password"]
        # Nothing was created: carol cannot log in with either.
        refused = await client.post(
            "/api/v1/auth/login", json={"username": "carol", "password": "short"}
        )
        assert refused.status_code == 401


async def test_editors_cannot_manage_identity(settings: Settings) -> None:
    async with running_app(settings) as client:
        admin = await login(client, settings.admin_username or "", settings.admin_password or "")
        tenant_id, editor = await make_tenant_user(client, admin, "acme", "editor")
        tenant = await client.post("/api/v1/tenants", json={"name": "mine"}, headers=editor)
        assert_error(tenant, 403, "PERMISSION_DENIED")
        listed = await client.get("/api/v1/tenants", headers=editor)
        assert_error(listed, 403, "PERMISSION_DENIED")
        user = await client.post(
            "/api/v1/users",
            json={"username": "dave", "password": PASSWORD, "tenant_id": tenant_id},
            headers=editor,
        )
        assert_error(user, 403, "PERMISSION_DENIED")


async def test_tenant_admin_creates_users_only_in_its_own_tenant(settings: Settings) -> None:
    async with running_app(settings) as client:
        admin = await login(client, settings.admin_username or "", settings.admin_password or "")
        tenant_a, a_admin = await make_tenant_user(client, admin, "acme", "admin")
        tenant_b, _ = await make_tenant_user(client, admin, "globex", "viewer")

        own = await client.post(
            "/api/v1/users",
            json={"username": "erin", "password": PASSWORD, "tenant_id": tenant_a},
            headers=a_admin,
        )
        assert own.status_code == 201, own.text
        assert own.json()["tenant_id"] == tenant_a
        # Without tenant_id, a user joins the tenant of whoever creates it.
        implicit = await client.post(
            "/api/v1/users", json={"username": "grace", "password": PASSWORD}, headers=a_admin
        )
        assert implicit.status_code == 201, implicit.text
        assert implicit.json()["tenant_id"] == tenant_a

        refused = [
            {"username": "frank", "password": PASSWORD, "tenant_id": tenant_b},
            {"username": "frank", "password": PASSWORD, "tenant_id": None},
            {
                "username": "frank",
                "password": PASSWORD,
                "tenant_id": tenant_a,
                "roles": ["platform_admin"],
            },
        ]
        for body in refused:
            response = await client.post("/api/v1/users", json=body, headers=a_admin)
            assert_error(response, 403, "PERMISSION_DENIED")
        assert_error(
            await client.post("/api/v1/tenants", json={"name": "evil"}, headers=a_admin),
            403,
            "PERMISSION_DENIED",
        )
        # A tenant admin sees its own tenant and is told another one does not exist.
        seen = {"min_position": own.json()["position"]}
        mine = await client.get(f"/api/v1/tenants/{tenant_a}", params=seen, headers=a_admin)
        assert mine.status_code == 200, mine.text
        assert mine.json()["name"] == "acme"
        other = await client.get(f"/api/v1/tenants/{tenant_b}", params=seen, headers=a_admin)
        assert_error(other, 404, "RESOURCE_NOT_FOUND")
