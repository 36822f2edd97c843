"""/api/v1/users over HTTP against the real app, Postgres and NATS: creating, listing
(tenant-scoped, filtered, paginated), reading with an ETag, changing roles and
activation under If-Match, deleting, and passwords (own change with the current one,
the policy, an admin's reset). Escalations are 403; another tenant's users are 404."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

from litestar.testing import AsyncTestClient

from infrastructure.settings import Settings
from tests.integration.api_client import assert_error, login, make_tenant_user, running_app

PASSWORD = "correct-horse-battery-staple"  # make_tenant_user's
NEW_PASSWORD = "a-new-and-longer-passphrase-7"
Headers = dict[str, str]


async def root_login(client: AsyncTestClient, settings: Settings) -> Headers:
    return await login(client, settings.admin_username or "", settings.admin_password or "")


async def create_user(
    client: AsyncTestClient,
    headers: Headers,
    tenant_id: str | None,
    username: str,
    roles: list[str] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"username": username, "password": PASSWORD, "tenant_id": tenant_id}
    if roles is not None:
        body["roles"] = roles
    response = await client.post("/api/v1/users", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


async def me(client: AsyncTestClient, headers: Headers) -> dict[str, Any]:
    response = await client.get("/api/v1/auth/me", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def list_all(
    client: AsyncTestClient, headers: Headers, position: int | None, **params: Any
) -> list[dict[str, Any]]:
    """Every page of GET /users, two at a time; each user must appear exactly once."""
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {"limit": 2, "min_position": position or 0, **params}
        if cursor:
            query["cursor"] = cursor
        response = await client.get("/api/v1/users", params=query, headers=headers)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= 2
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    ids = [item["id"] for item in items]
    assert len(ids) == len(set(ids)), "a user appeared on two pages"
    return items


def names(items: list[dict[str, Any]]) -> set[str]:
    return {item["username"] for item in items}


async def test_create_answers_201_with_location_and_the_user_reads_back(
    settings: Settings,
) -> None:
    async with running_app(settings) as client:
        root = await root_login(client, settings)
        tenant_id, acme_admin = await make_tenant_user(client, root, "acme", "admin")

        response = await client.post(
            "/api/v1/users",
            json={"username": "erin", "password": PASSWORD, "tenant_id": tenant_id},
            headers=acme_admin,
        )

        assert response.status_code == 201, response.text
        created = response.json()
        assert response.headers["location"] == f"/api/v1/users/{created['id']}"
        assert created["username"] == "erin" and created["tenant_id"] == tenant_id
        assert created["roles"] == ["viewer"]  # the default role
        assert created["active"] is True and created["version"] == 1
        assert isinstance(created["position"], int)
        assert "password" not in response.text and "hash" not in response.text
        read = await client.get(
            response.headers["location"],
            params={"min_position": created["position"]},
            headers=acme_admin,
        )
        assert read.status_code == 200, read.text
        assert read.headers["etag"] == '"1"'
        assert {k: v for k, v in created.items() if k != "position"} == read.json()
        await login(client, "erin", PASSWORD)


async def test_tenant_admin_lists_its_tenants_users_filtered_and_paginated(
    settings: Settings,
) -> None:
    async with running_app(settings) as client:
        root = await root_login(client, settings)
        acme, acme_admin = await make_tenant_user(client, root, "acme", "admin")
        globex, _ = await make_tenant_user(client, root, "globex", "admin")
        for name, roles in [("ann", ["viewer"]), ("ben", ["editor"]), ("cat", ["viewer"])]:
            await create_user(client, acme_admin, acme, name, roles)
        await create_user(client, root, globex, "gil", ["viewer"])
        dee = await create_user(client, acme_admin, acme, "dee", ["operator", "viewer"])
        off = await client.put(
            f"/api/v1/users/{dee['id']}", json={"active": False}, headers=acme_admin
        )
        assert off.status_code == 200, off.text
        seen = off.json()["position"]

        everyone = await list_all(client, acme_admin, seen)
        viewers = await list_all(client, acme_admin, seen, role="viewer")
        inactive = await list_all(client, acme_admin, seen, active="false")
        active_viewers = await list_all(client, acme_admin, seen, role="viewer", active="true")

        assert names(everyone) == {"acme-admin", "ann", "ben", "cat", "dee"}
        assert [u["username"] for u in everyone][:1] == ["acme-admin"]  # oldest first
        assert {u["tenant_id"] for u in everyone} == {acme}
        assert names(viewers) == {"ann", "cat", "dee"}
        assert names(inactive) == {"dee"}
        assert names(active_viewers) == {"ann", "cat"}
        for bad in ({"cursor": "not-a-cursor"}, {"role": "owner"}, {"limit": 0}):
            response = await client.get("/api/v1/users", params=bad, headers=acme_admin)
            assert_error(response, 400, "VALIDATION_ERROR")


async def test_platform_admin_lists_every_user_or_one_tenants_with_x_tenant_id(
    settings: Settings,
) -> None:
    async with running_app(settings) as client:
        root = await root_login(client, settings)
        acme, _ = await make_tenant_user(client, root, "acme", "admin")
        globex, _ = await make_tenant_user(client, root, "globex", "viewer")
        last = await create_user(client, root, globex, "gil", ["editor"])
        seen = last["position"]

        everyone = await list_all(client, root, seen)
        in_globex = await list_all(client, {**root, "X-Tenant-ID": globex}, seen)
        platform = await list_all(client, root, seen, role="platform_admin")

        assert names(everyone) == {settings.admin_username, "acme-admin", "globex-viewer", "gil"}
        assert names(in_globex) == {"globex-viewer", "gil"}
        assert names(platform) == {settings.admin_username}
        acme_user = next(u for u in everyone if u["username"] == "acme-admin")
        assert acme_user["tenant_id"] == acme
        # Acting in globex, acme's user is not there.
        other = await client.get(
            f"/api/v1/users/{acme_user['id']}", headers={**root, "X-Tenant-ID": globex}
        )
        assert_error(other, 404, "RESOURCE_NOT_FOUND")


async def test_another_tenants_user_is_not_found_on_every_user_route(settings: Settings) -> None:
    async with running_app(settings) as client:
        root = await root_login(client, settings)
        _, acme_admin = await make_tenant_user(client, root, "acme", "admin")
        globex, _ = await make_tenant_user(client, root, "globex", "admin")
        gil = await create_user(client, root, globex, "gil", ["editor"])
        root_id = (await me(client, root))["id"]
        requests = [
            ("GET", None),
            ("PUT", {"active": False}),
            ("DELETE", None),
        ]

        for target in (gil["id"], root_id, str(uuid4())):
            for method, body in requests:
                response = await client.request(
                    method, f"/api/v1/users/{target}", json=body, headers=acme_admin
                )
                assert_error(response, 404, "RESOURCE_NOT_FOUND")
            reset = await client.post(
                f"/api/v1/users/{target}/password",
                json={"new_password": NEW_PASSWORD},
                headers=acme_admin,
            )
            assert_error(reset, 404, "RESOURCE_NOT_FOUND")

        # gil was left alone: still active, old password still works.
        await login(client, "gil", PASSWORD)


async def test_roles_and_activation_change_under_if_match(settings: Settings) -> None:
    async with running_app(settings) as client:
        root = await root_login(client, settings)
        acme, acme_admin = await make_tenant_user(client, root, "acme", "admin")
        ann = await create_user(client, acme_admin, acme, "ann", ["viewer"])
        ann_headers = await login(client, "ann", PASSWORD)
        url = f"/api/v1/users/{ann['id']}"
        read = await client.get(url, params={"min_position": ann["position"]}, headers=acme_admin)
        etag = read.headers["etag"]

        promoted = await client.put(
            url, json={"roles": ["editor"]}, headers={**acme_admin, "If-Match": etag}
        )
        assert promoted.status_code == 200, promoted.text
        assert promoted.json()["roles"] == ["editor"]
        assert promoted.headers["etag"] == '"2"' != etag
        # The new roles hold on ann's very next request, with the same token.
        assert (await me(client, ann_headers))["roles"] == ["editor"]

        stale = await client.put(
            url, json={"active": False}, headers={**acme_admin, "If-Match": etag}
        )
        assert_error(stale, 412, "VERSION_CONFLICT")
        assert (await me(client, ann_headers))["roles"] == ["editor"]  # still active

        off = await client.put(
            url, json={"active": False}, headers={**acme_admin, "If-Match": '"2"'}
        )
        assert off.status_code == 200, off.text
        assert off.json()["active"] is False
        assert_error(
            await client.get("/api/v1/auth/me", headers=ann_headers), 401, "AUTHENTICATION_REQUIRED"
        )
        refused = await client.post(
            "/api/v1/auth/login", json={"username": "ann", "password": PASSWORD}
        )
        assert_error(refused, 401, "AUTHENTICATION_REQUIRED")

        on = await client.put(url, json={"active": True}, headers=acme_admin)
        assert on.status_code == 200, on.text
        assert on.json()["active"] is True
        # Reactivation lets ann log in again; the session deactivation ended stays ended.
        await login(client, "ann", PASSWORD)
        assert_error(
            await client.get("/api/v1/auth/me", headers=ann_headers), 401, "AUTHENTICATION_REQUIRED"
        )
        unchanged = await client.put(url, json={"active": True}, headers=acme_admin)
        assert unchanged.status_code == 200, unchanged.text
        assert unchanged.json()["version"] == on.json()["version"]
        assert unchanged.json()["position"] is None  # nothing recorded


async def test_tenant_admins_cannot_escalate_or_change_themselves(settings: Settings) -> None:
    async with running_app(settings) as client:
        root = await root_login(client, settings)
        acme, acme_admin = await make_tenant_user(client, root, "acme", "admin")
        ann = await create_user(client, acme_admin, acme, "ann", ["viewer"])
        own = (await me(client, acme_admin))["id"]

        grant = await client.put(
            f"/api/v1/users/{ann['id']}", json={"roles": ["platform_admin"]}, headers=acme_admin
        )
        assert_error(grant, 403, "PERMISSION_DENIED")
        # Even a platform admin cannot make a tenant's user a platform admin.
        by_root = await client.put(
            f"/api/v1/users/{ann['id']}", json={"roles": ["platform_admin"]}, headers=root
        )
        assert_error(by_root, 422, "VALIDATION_ERROR")

        for body in ({"roles": ["viewer"]}, {"roles": ["admin", "editor"]}, {"active": False}):
            response = await client.put(f"/api/v1/users/{own}", json=body, headers=acme_admin)
            assert_error(response, 422, "VALIDATION_ERROR")
        assert_error(
            await client.delete(f"/api/v1/users/{own}", headers=acme_admin),
            422,
            "VALIDATION_ERROR",
        )
        # Restating its own roles (repeats included) is no change, so it is allowed.
        for body in ({"roles": ["admin"], "active": True}, {"roles": ["admin", "admin"]}):
            same = await client.put(f"/api/v1/users/{own}", json=body, headers=acme_admin)
            assert same.status_code == 200, same.text
            assert same.json()["position"] is None
        assert (await me(client, acme_admin))["roles"] == ["admin"]
        assert (await me(client, await login(client, "ann", PASSWORD)))["roles"] == ["viewer"]


async def test_editors_operators_and_viewers_cannot_manage_users(settings: Settings) -> None:
    async with running_app(settings) as client:
        root = await root_login(client, settings)
        acme, acme_admin = await make_tenant_user(client, root, "acme", "admin")
        target = (await me(client, acme_admin))["id"]
        for role in ("editor", "operator", "viewer"):
            await create_user(client, acme_admin, acme, f"the-{role}", [role])
            headers = await login(client, f"the-{role}", PASSWORD)
            attempts = [
                ("POST", "/api/v1/users", {"username": "x-" + role, "password": PASSWORD}),
                ("GET", "/api/v1/users", None),
                ("GET", f"/api/v1/users/{target}", None),
                ("PUT", f"/api/v1/users/{target}", {"active": False}),
                ("DELETE", f"/api/v1/users/{target}", None),
            ]
            for method, path, body in attempts:
                response = await client.request(method, path, json=body, headers=headers)
                assert_error(response, 403, "PERMISSION_DENIED")
        assert (await me(client, acme_admin))["roles"] == ["admin"]


async def test_a_deleted_user_is_gone_cannot_log_in_and_keeps_its_name(
    settings: Settings,
) -> None:
    async with running_app(settings) as client:
        root = await root_login(client, settings)
        acme, acme_admin = await make_tenant_user(client, root, "acme", "admin")
        ann = await create_user(client, acme_admin, acme, "ann", ["editor"])
        ann_headers = await login(client, "ann", PASSWORD)
        url = f"/api/v1/users/{ann['id']}"

        deleted = await client.delete(url, headers=acme_admin)

        assert deleted.status_code == 200, deleted.text
        seen = deleted.json()["position"]
        assert_error(
            await client.get(url, params={"min_position": seen}, headers=acme_admin),
            404,
            "RESOURCE_NOT_FOUND",
        )
        assert "ann" not in names(await list_all(client, acme_admin, seen))
        assert_error(
            await client.get("/api/v1/auth/me", headers=ann_headers), 401, "AUTHENTICATION_REQUIRED"
        )
        login_again = await client.post(
            "/api/v1/auth/login", json={"username": "ann", "password": PASSWORD}
        )
        assert_error(login_again, 401, "AUTHENTICATION_REQUIRED")
        for method, body in (("PUT", {"active": True}), ("DELETE", None)):
            response = await client.request(method, url, json=body, headers=acme_admin)
            assert_error(response, 404, "RESOURCE_NOT_FOUND")
        for username in ("ann", "ANN"):
            again = await client.post(
                "/api/v1/users",
                json={"username": username, "password": PASSWORD, "tenant_id": acme},
                headers=acme_admin,
            )
            error = assert_error(again, 409, "RESOURCE_CONFLICT")
            assert error["details"] == [{"field": "username", "message": error["message"]}]


# --- passwords ----------------------------------------------------------------------------


async def change_password(
    client: AsyncTestClient, headers: Headers, user_id: str, **body: str
) -> Any:
    return await client.post(f"/api/v1/users/{user_id}/password", json=body, headers=headers)


async def test_users_change_their_own_password_by_giving_the_current_one(
    settings: Settings,
) -> None:
    async with running_app(settings) as client:
        slowed: list[float] = []

        async def record(seconds: float) -> None:
            slowed.append(seconds)  # test_api_login_throttle.py checks the waits themselves

        client.app.state.container.logins._sleep = record
        root = await root_login(client, settings)
        _, ann = await make_tenant_user(client, root, "acme", "viewer")
        ann_id = (await me(client, ann))["id"]

        missing = await change_password(client, ann, ann_id, new_password=NEW_PASSWORD)
        error = assert_error(missing, 422, "VALIDATION_ERROR")
        assert [d["field"] for d in error["details"]] == ["current_password"]

        # A wrong current password is a mistake in the form, not an expired login: 422
        # (a 401 would send clients to refresh or log in again), and the session lives on.
        wrong = await change_password(
            client, ann, ann_id, current_password="not-my-password", new_password=NEW_PASSWORD
        )
        error = assert_error(wrong, 422, "VALIDATION_ERROR")
        assert [d["field"] for d in error["details"]] == ["current_password"]
        assert "www-authenticate" not in wrong.headers
        await me(client, ann)

        for weak in ("too-short", "my-name-is-acme-viewer!"):
            refused = await change_password(
                client, ann, ann_id, current_password=PASSWORD, new_password=weak
            )
            error = assert_error(refused, 422, "VALIDATION_ERROR")
            assert [d["field"] for d in error["details"]] == ["password"]
        await login(client, "acme-viewer", PASSWORD)  # nothing changed so far

        changed = await change_password(
            client, ann, ann_id, current_password=PASSWORD, new_password=NEW_PASSWORD
        )
        assert changed.status_code == 200, changed.text
        assert changed.json()["version"] == 2
        assert NEW_PASSWORD not in changed.text
        # Every session of the user ends, this one included; the new password logs in.
        assert_error(
            await client.get("/api/v1/auth/me", headers=ann), 401, "AUTHENTICATION_REQUIRED"
        )
        old = await client.post(
            "/api/v1/auth/login", json={"username": "acme-viewer", "password": PASSWORD}
        )
        assert_error(old, 401, "AUTHENTICATION_REQUIRED")
        await me(client, await login(client, "acme-viewer", NEW_PASSWORD))
        # A wrong current password counts as a failed login: the ones after were slowed.
        assert slowed


async def test_an_admin_resets_a_password_without_the_current_one(settings: Settings) -> None:
    async with running_app(settings) as client:
        root = await root_login(client, settings)
        acme, acme_admin = await make_tenant_user(client, root, "acme", "admin")
        ann = await create_user(client, acme_admin, acme, "ann", ["editor"])
        ann_headers = await login(client, "ann", PASSWORD)

        weak = await change_password(client, acme_admin, ann["id"], new_password="ann-is-ann-1234")
        assert_error(weak, 422, "VALIDATION_ERROR")
        reset = await change_password(client, acme_admin, ann["id"], new_password=NEW_PASSWORD)

        assert reset.status_code == 200, reset.text
        assert_error(
            await client.get("/api/v1/auth/me", headers=ann_headers), 401, "AUTHENTICATION_REQUIRED"
        )
        await login(client, "ann", NEW_PASSWORD)
        # A platform admin may reset it too, also without knowing the current one.
        again = await change_password(client, root, ann["id"], new_password=PASSWORD + "-2")
        assert again.status_code == 200, again.text
        await login(client, "ann", PASSWORD + "-2")


async def test_only_user_admins_reset_other_users_passwords(settings: Settings) -> None:
    """Without users:write the answer is 403 whoever the target is (a colleague, another
    tenant's user, an id that does not exist), like every other /users route for such a
    caller: it depends on the caller's role only, so it reveals nothing about the id."""
    async with running_app(settings) as client:
        root = await root_login(client, settings)
        acme, acme_admin = await make_tenant_user(client, root, "acme", "admin")
        globex, _ = await make_tenant_user(client, root, "globex", "editor")
        ann = await create_user(client, acme_admin, acme, "ann", ["editor"])
        colleague = (await me(client, acme_admin))["id"]
        stranger = (await me(client, await login(client, "globex-editor", PASSWORD)))["id"]
        messages = set()

        for target in (colleague, stranger, str(uuid4())):
            response = await change_password(
                client,
                await login(client, "ann", PASSWORD),
                target,
                current_password=PASSWORD,
                new_password=NEW_PASSWORD,
            )
            messages.add(assert_error(response, 403, "PERMISSION_DENIED")["message"])

        assert len(messages) == 1
        await login(client, "acme-admin", PASSWORD)
        await login(client, "globex-editor", PASSWORD)
        assert ann["tenant_id"] == acme != globex


async def test_a_suspended_tenants_users_are_read_only_but_own_passwords_change(
    settings: Settings,
) -> None:
    """Suspension freezes the tenant's resources, users included, but a user may still
    change its own password: securing an account must not wait for the tenant."""
    async with running_app(settings) as client:
        root = await root_login(client, settings)
        acme, acme_admin = await make_tenant_user(client, root, "acme", "admin")
        ann = await create_user(client, acme_admin, acme, "ann", ["editor"])
        suspended = await client.put(
            f"/api/v1/tenants/{acme}", json={"status": "suspended"}, headers=root
        )
        assert suspended.status_code == 200, suspended.text
        url = f"/api/v1/users/{ann['id']}"

        listed = await client.get("/api/v1/users", headers=acme_admin)
        assert listed.status_code == 200, listed.text
        writes = [
            ("POST", "/api/v1/users", {"username": "new", "password": PASSWORD, "tenant_id": acme}),
            ("PUT", url, {"roles": ["viewer"]}),
            ("DELETE", url, None),
            ("POST", f"{url}/password", {"new_password": NEW_PASSWORD}),
        ]
        for method, path, body in writes:
            response = await client.request(method, path, json=body, headers=acme_admin)
            error = assert_error(response, 403, "PERMISSION_DENIED")
            assert "suspended" in error["message"]

        own = await change_password(
            client,
            await login(client, "ann", PASSWORD),
            ann["id"],
            current_password=PASSWORD,
            new_password=NEW_PASSWORD,
        )
        assert own.status_code == 200, own.text
        assert (await me(client, await login(client, "ann", NEW_PASSWORD)))["roles"] == ["editor"]
