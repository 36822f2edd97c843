"""Tenants over HTTP against the real app: create, list with filters and cursors, read
as the tenant's own admin, the split between what a tenant admin and a platform admin
may change, renames, plans, suspension, If-Match, soft delete and namespaces."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import msgspec
from litestar.testing import AsyncTestClient

from domain.tenant import PLAN_QUOTAS
from infrastructure.settings import Settings
from tests.integration.api_client import (
    assert_error,
    create_pipeline,
    login,
    make_tenant_user,
    pipeline_body,
    running_app,
)

Headers = dict[str, str]


async def root(client: AsyncTestClient, settings: Settings) -> Headers:
    return await login(client, settings.admin_username or "", settings.admin_password or "")


async def new_tenant(client: AsyncTestClient, admin: Headers, **body: Any) -> dict[str, Any]:
    response = await client.post("/api/v1/tenants", json=body, headers=admin)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def read_tenant(
    client: AsyncTestClient, headers: Headers, tenant_id: str, position: int | None = None
) -> dict[str, Any]:
    params = {"min_position": position} if position else {}
    response = await client.get(f"/api/v1/tenants/{tenant_id}", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def put_tenant(
    client: AsyncTestClient, headers: Headers, tenant_id: str, **body: Any
) -> dict[str, Any]:
    response = await client.put(f"/api/v1/tenants/{tenant_id}", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


def _quotas(plan: str) -> dict[str, Any]:
    return msgspec.structs.asdict(PLAN_QUOTAS[plan])


async def test_create_answers_201_with_location_and_every_field(settings: Settings) -> None:
    async with running_app(settings) as client:
        admin = await root(client, settings)
        response = await client.post(
            "/api/v1/tenants",
            json={
                "name": "Acme",
                "description": "the acme team",
                "plan": "pro",
                "labels": {"region": "eu", "example.com/tier": "gold"},
                "owner": "ops@acme.example",
            },
            headers=admin,
        )
        assert response.status_code == 201, response.text
        body = response.json()
        assert response.headers["location"] == f"/api/v1/tenants/{body['id']}"
        assert body["owner"] == "ops@acme.example"
        assert body["labels"] == {"region": "eu", "example.com/tier": "gold"}
        assert (body["plan"], body["status"], body["status_reason"]) == ("pro", "active", "")
        assert body["namespaces"] == [] and body["quota_overrides"] == {}
        assert body["quotas"] == _quotas("pro")
        assert body["version"] == 1

        read = await client.get(
            response.headers["location"],
            params={"min_position": body["position"]},
            headers=admin,
        )
        assert read.status_code == 200, read.text
        assert read.headers["etag"] == '"1"'
        assert read.json() == {k: v for k, v in body.items() if k != "position"}


async def test_create_refuses_bad_fields_naming_them(settings: Settings) -> None:
    async with running_app(settings) as client:
        admin = await root(client, settings)
        for body, field in [
            ({"name": "a", "labels": {"-bad-": "v"}}, "labels.-bad-"),
            ({"name": "a", "labels": {"k": "v" * 201}}, "labels.k"),
            ({"name": "a", "labels": {f"k{i}": "v" for i in range(51)}}, "labels"),
            ({"name": "a", "owner": "o\x00"}, "owner"),
        ]:
            error = assert_error(
                await client.post("/api/v1/tenants", json=body, headers=admin),
                422,
                "VALIDATION_ERROR",
            )
            assert [d["field"] for d in error["details"]] == [field], error
        for body in ({"name": "a", "plan": "platinum"}, {"name": "a", "status": "active"}):
            response = await client.post("/api/v1/tenants", json=body, headers=admin)
            assert response.status_code in (400, 422), response.text
            assert response.json()["error"]["code"] == "VALIDATION_ERROR"
        listed = await client.get("/api/v1/tenants", headers=admin)
        assert listed.json()["items"] == []


async def test_list_filters_by_status_and_labels_and_pages_through_every_tenant_once(
    settings: Settings,
) -> None:
    async with running_app(settings) as client:
        admin = await root(client, settings)
        labels = [
            {"region": "eu", "tier": "gold"},
            {"region": "eu", "tier": "silver"},
            {"region": "us", "tier": "gold"},
            {"region": "eu"},
            {},
        ]
        made = [
            await new_tenant(client, admin, name=f"t{i}", labels=labels[i % len(labels)])
            for i in range(11)
        ]
        suspended = {made[1]["id"], made[4]["id"]}
        position = 0
        for tenant_id in suspended:
            changed = await put_tenant(client, admin, tenant_id, status="suspended")
            position = changed["position"]
        deleted = await client.delete(f"/api/v1/tenants/{made[2]['id']}", headers=admin)
        assert deleted.status_code == 200, deleted.text
        position = max(position, deleted.json()["position"])

        async def listing(**params: Any) -> list[str]:
            """Every tenant id the filter lists, following next_cursor to the end."""
            ids: list[str] = []
            cursor = None
            pages = 0
            while True:
                query = {**params, "limit": 3, "min_position": position}
                if cursor:
                    query["cursor"] = cursor
                page = await client.get("/api/v1/tenants", params=query, headers=admin)
                assert page.status_code == 200, page.text
                assert len(page.json()["items"]) <= 3
                ids.extend(t["id"] for t in page.json()["items"])
                cursor = page.json()["next_cursor"]
                pages += 1
                if cursor is None:
                    return ids
                assert pages < 20, "next_cursor never ends"

        everything = await listing()
        assert everything == [t["id"] for t in made]  # oldest first, each once
        assert set(await listing(status="suspended")) == suspended
        assert await listing(status="deleted") == [made[2]["id"]]
        assert len(await listing(status="active")) == len(made) - 3

        gold_eu = await listing(label=["region=eu", "tier=gold"])
        expected = [t["id"] for t in made if t["labels"] == {"region": "eu", "tier": "gold"}]
        assert gold_eu == expected and len(expected) == 3
        eu = await listing(label="region=eu")
        assert eu == [t["id"] for t in made if t["labels"].get("region") == "eu"]
        assert await listing(label="region=mars") == []
        eu_suspended = await listing(label="region=eu", status="suspended")
        assert eu_suspended == [made[1]["id"]]

        for params in (
            {"status": "sleeping"},
            {"label": "no-equals-sign"},
            {"label": "=value"},
            {"cursor": "not-a-cursor"},
        ):
            bad = await client.get("/api/v1/tenants", params=params, headers=admin)
            assert_error(bad, 400, "VALIDATION_ERROR")


async def test_a_tenant_admin_reads_its_own_tenant_only(settings: Settings) -> None:
    async with running_app(settings) as client:
        admin = await root(client, settings)
        mine, a_admin = await make_tenant_user(client, admin, "acme", "admin")
        theirs, _ = await make_tenant_user(client, admin, "globex", "admin")

        own = await client.get(f"/api/v1/tenants/{mine}", headers=a_admin)
        assert own.status_code == 200, own.text
        assert own.headers["etag"] == f'"{own.json()["version"]}"'
        assert own.json()["name"] == "acme"
        for other in (theirs, str(uuid4())):
            for path in (f"/api/v1/tenants/{other}", f"/api/v1/tenants/{other}/usage"):
                assert_error(await client.get(path, headers=a_admin), 404, "RESOURCE_NOT_FOUND")
        assert_error(await client.get("/api/v1/tenants", headers=a_admin), 403, "PERMISSION_DENIED")


async def test_a_tenant_admin_changes_description_and_labels_but_nothing_else(
    settings: Settings,
) -> None:
    async with running_app(settings) as client:
        admin = await root(client, settings)
        tenant_id, a_admin = await make_tenant_user(client, admin, "acme", "admin")

        changed = await put_tenant(
            client,
            a_admin,
            tenant_id,
            description="we make anvils",
            labels={"team": "anvils"},
            name="acme",  # unchanged: allowed
            status="active",  # unchanged: allowed
        )
        assert (changed["description"], changed["labels"]) == ("we make anvils", {"team": "anvils"})
        before = await read_tenant(client, admin, tenant_id, changed["position"])

        for body, refused in [
            ({"name": "acme-2"}, ["name"]),
            ({"plan": "enterprise"}, ["plan"]),
            ({"status": "suspended"}, ["status"]),
            ({"owner": "me@acme.example"}, ["owner"]),
            (
                {"description": "sneaky", "name": "x", "plan": "pro", "owner": "me"},
                ["name", "owner", "plan"],
            ),
        ]:
            response = await client.put(f"/api/v1/tenants/{tenant_id}", json=body, headers=a_admin)
            error = assert_error(response, 403, "PERMISSION_DENIED")
            assert f"not {', '.join(refused)}" in error["message"], error
        quotas = await client.put(
            f"/api/v1/tenants/{tenant_id}/quotas", json={"max_pipelines": 1000}, headers=a_admin
        )
        assert_error(quotas, 403, "PERMISSION_DENIED")
        delete = await client.delete(f"/api/v1/tenants/{tenant_id}", headers=a_admin)
        assert_error(delete, 403, "PERMISSION_DENIED")

        # Nothing changed: the same version, and no event was appended after the PUT.
        probe = await put_tenant(client, admin, tenant_id, description="we make anvils")
        assert probe["position"] is None  # a no-op records nothing
        assert await read_tenant(client, admin, tenant_id) == before


async def test_platform_admin_renames_and_names_stay_unique(settings: Settings) -> None:
    async with running_app(settings) as client:
        admin = await root(client, settings)
        acme = await new_tenant(client, admin, name="acme")
        await new_tenant(client, admin, name="globex")

        renamed = await put_tenant(client, admin, acme["id"], name="Acme Corp")
        assert renamed["name"] == "Acme Corp" and renamed["version"] == 2
        # The old name is free at once, the new one is taken (in any case).
        reused = await new_tenant(client, admin, name="ACME")
        assert reused["id"] != acme["id"]
        for body, tenant_id in [
            ({"name": "acme corp"}, reused["id"]),
            ({"name": "globex"}, acme["id"]),
        ]:
            taken = await client.put(f"/api/v1/tenants/{tenant_id}", json=body, headers=admin)
            error = assert_error(taken, 409, "RESOURCE_CONFLICT")
            assert error["details"] == [{"field": "name", "message": "already taken"}]
        dup = await client.post("/api/v1/tenants", json={"name": "Acme Corp"}, headers=admin)
        assert_error(dup, 409, "RESOURCE_CONFLICT")
        # A refused rename changed nothing.
        assert (await read_tenant(client, admin, acme["id"], renamed["position"]))["version"] == 2
        # Renaming only the case keeps the tenant's own name.
        recased = await put_tenant(client, admin, acme["id"], name="ACME CORP")
        assert recased["name"] == "ACME CORP"


async def test_platform_admin_changes_plan_suspends_and_reactivates(settings: Settings) -> None:
    async with running_app(settings) as client:
        admin = await root(client, settings)
        tenant = await new_tenant(client, admin, name="acme", plan="free")

        upgraded = await put_tenant(client, admin, tenant["id"], plan="enterprise")
        assert (upgraded["plan"], upgraded["quotas"]) == ("enterprise", _quotas("enterprise"))

        suspended = await put_tenant(
            client, admin, tenant["id"], status="suspended", status_reason="invoice unpaid"
        )
        assert (suspended["status"], suspended["status_reason"]) == ("suspended", "invoice unpaid")
        read = await read_tenant(client, admin, tenant["id"], suspended["position"])
        assert (read["status"], read["status_reason"]) == ("suspended", "invoice unpaid")
        again = await put_tenant(client, admin, tenant["id"], status="suspended")
        assert again["position"] is None and again["status_reason"] == "invoice unpaid"

        active = await put_tenant(client, admin, tenant["id"], status="active")
        assert (active["status"], active["status_reason"]) == ("active", "")
        read = await read_tenant(client, admin, tenant["id"], active["position"])
        assert (read["status"], read["plan"], read["version"]) == ("active", "enterprise", 4)

        refused = await client.put(
            f"/api/v1/tenants/{tenant['id']}", json={"status": "deleted"}, headers=admin
        )
        assert refused.status_code in (400, 422), refused.text


async def test_if_match_guards_every_tenant_write(settings: Settings) -> None:
    async with running_app(settings) as client:
        admin = await root(client, settings)
        tenant = await new_tenant(client, admin, name="acme")
        path = f"/api/v1/tenants/{tenant['id']}"

        first = await client.put(
            path, json={"description": "one"}, headers={**admin, "If-Match": '"1"'}
        )
        assert first.status_code == 200, first.text
        assert first.headers["etag"] == '"2"'
        spare = await client.post(
            f"{path}/namespaces", json={"namespace": "spare"}, headers={**admin, "If-Match": '"2"'}
        )
        assert spare.status_code == 201, spare.text
        assert spare.headers["etag"] == '"3"'
        for method, url, body in [
            ("PUT", path, {"description": "stale"}),
            ("PUT", f"{path}/quotas", {"max_pipelines": 1}),
            ("POST", f"{path}/namespaces", {"namespace": "late"}),
            ("DELETE", f"{path}/namespaces/spare", None),
            ("DELETE", path, None),
        ]:
            stale = await client.request(
                method, url, json=body, headers={**admin, "If-Match": '"1"'}
            )
            assert_error(stale, 412, "VERSION_CONFLICT")
        read = await read_tenant(client, admin, tenant["id"], spare.json()["position"])
        assert (read["description"], read["version"], read["status"]) == ("one", 3, "active")
        assert read["namespaces"] == ["spare"] and read["quota_overrides"] == {}


async def test_delete_is_soft_and_the_platform_admin_still_reads_the_tenant(
    settings: Settings,
) -> None:
    async with running_app(settings) as client:
        admin = await root(client, settings)
        tenant = await new_tenant(client, admin, name="acme")
        path = f"/api/v1/tenants/{tenant['id']}"

        deleted = await client.delete(path, headers=admin)
        assert deleted.status_code == 200, deleted.text
        assert deleted.json()["status"] == "deleted"
        read = await read_tenant(client, admin, tenant["id"], deleted.json()["position"])
        assert (read["status"], read["name"]) == ("deleted", "acme")
        usage = await client.get(f"{path}/usage", headers=admin)
        assert usage.status_code == 200, usage.text

        # A deleted tenant takes no more commands, and its name stays taken (audit).
        for method, url, body in [
            ("PUT", path, {"status": "active"}),
            ("DELETE", path, None),
            ("PUT", f"{path}/quotas", {"max_pipelines": 1}),
            ("POST", f"{path}/namespaces", {"namespace": "late"}),
        ]:
            response = await client.request(method, url, json=body, headers=admin)
            assert_error(response, 404, "RESOURCE_NOT_FOUND")
        reuse = await client.post("/api/v1/tenants", json={"name": "acme"}, headers=admin)
        assert_error(reuse, 409, "RESOURCE_CONFLICT")
        assert (await read_tenant(client, admin, tenant["id"]))["version"] == 2


async def test_namespaces_hold_pipelines_and_are_removed_only_when_empty(
    settings: Settings,
) -> None:
    async with running_app(settings) as client:
        admin = await root(client, settings)
        tenant_id, a_admin = await make_tenant_user(client, admin, "acme", "admin")
        namespaces = f"/api/v1/tenants/{tenant_id}/namespaces"

        for namespace in ("prod", "staging"):
            added = await client.post(namespaces, json={"namespace": namespace}, headers=a_admin)
            assert added.status_code == 201, added.text
            assert added.headers["location"] == f"{namespaces}/{namespace}"
            followed = await client.get(added.headers["location"], headers=a_admin)
            assert followed.json() == {
                "tenant_id": tenant_id,
                "namespace": namespace,
                "pipelines": 0,
            }
        assert added.json()["namespaces"] == ["prod", "staging"]
        for bad in ("prod", "Prod", "-x", "has_underscore", "a" * 63 + "b"):
            response = await client.post(namespaces, json={"namespace": bad}, headers=a_admin)
            # "prod" exists: a conflict; the others are invalid names.
            expected = (409, "RESOURCE_CONFLICT") if bad == "prod" else (422, "VALIDATION_ERROR")
            assert_error(response, *expected)

        in_prod = await create_pipeline(client, a_admin, "nightly", namespace="prod")
        await create_pipeline(client, a_admin, "loose")
        listed = await client.get(
            "/api/v1/pipelines",
            params={"namespace": "prod", "min_position": in_prod["position"]},
            headers=a_admin,
        )
        assert [p["name"] for p in listed.json()["items"]] == ["nightly"]
        assert in_prod["namespace"] == "prod"

        unknown = await client.post(
            "/api/v1/pipelines", json=pipeline_body("lost", namespace="dev"), headers=a_admin
        )
        error = assert_error(unknown, 422, "VALIDATION_ERROR")
        assert [d["field"] for d in error["details"]] == ["namespace"]

        in_use = await client.delete(f"{namespaces}/prod", headers=a_admin)
        error = assert_error(in_use, 409, "RESOURCE_CONFLICT")
        assert error["details"][0]["field"] == "namespace"
        empty = await client.delete(f"{namespaces}/staging", headers=a_admin)
        assert empty.status_code == 200, empty.text
        assert empty.headers["etag"] == f'"{empty.json()["version"]}"'
        assert empty.json()["namespaces"] == ["prod"]
        for missing in ("staging", "never-was"):
            gone = await client.delete(f"{namespaces}/{missing}", headers=a_admin)
            assert_error(gone, 404, "RESOURCE_NOT_FOUND")

        # Once its pipeline is deleted, the namespace can go, and then takes no pipeline.
        deleted = await client.delete(f"/api/v1/pipelines/{in_prod['id']}", headers=a_admin)
        assert deleted.status_code == 200, deleted.text
        removed = await client.delete(f"{namespaces}/prod", headers=a_admin)
        assert removed.status_code == 200, removed.text
        late = await client.post(
            "/api/v1/pipelines", json=pipeline_body("late", namespace="prod"), headers=a_admin
        )
        assert_error(late, 422, "VALIDATION_ERROR")
        read = await read_tenant(client, a_admin, tenant_id, removed.json()["position"])
        assert read["namespaces"] == []


async def test_a_namespace_in_use_is_kept_even_before_the_read_model_catches_up(
    settings: Settings,
) -> None:
    """The check must see a pipeline created, or moved, a moment ago."""
    async with running_app(settings) as client:
        admin = await root(client, settings)
        tenant_id, a_admin = await make_tenant_user(client, admin, "acme", "admin")
        namespaces = f"/api/v1/tenants/{tenant_id}/namespaces"
        for namespace in ("prod", "dev"):
            added = await client.post(namespaces, json={"namespace": namespace}, headers=a_admin)
            assert added.status_code == 201, added.text

        for round_ in range(3):
            pipeline = await create_pipeline(client, a_admin, f"p{round_}", namespace="prod")
            at_once = await client.delete(f"{namespaces}/prod", headers=a_admin)
            assert_error(at_once, 409, "RESOURCE_CONFLICT")
            moved = await client.put(
                f"/api/v1/pipelines/{pipeline['id']}",
                json=pipeline_body(f"p{round_}", namespace="dev"),
                headers=a_admin,
            )
            assert moved.status_code == 200, moved.text
            dev = await client.delete(f"{namespaces}/dev", headers=a_admin)
            assert_error(dev, 409, "RESOURCE_CONFLICT")
            emptied = await client.delete(f"/api/v1/pipelines/{pipeline['id']}", headers=a_admin)
            assert emptied.status_code == 200, emptied.text

        for namespace in ("prod", "dev"):
            removed = await client.delete(f"{namespaces}/{namespace}", headers=a_admin)
            assert removed.status_code == 200, removed.text
