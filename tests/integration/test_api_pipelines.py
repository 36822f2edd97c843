"""The pipeline resource over HTTP: create, list, get, revise, history, revisions,
rollback, clone, validate and delete, against the real app and its read model (one app
for the module, each test in a tenant of its own)."""

from __future__ import annotations

from typing import Any

from litestar.testing import AsyncTestClient

from infrastructure.settings import Settings
from tests.integration.api_client import (
    assert_error,
    create_pipeline,
    make_tenant_user,
    pipeline_body,
    platform_admin,
    unique,
)

BASE = "/api/v1/pipelines"


async def _editor(client: AsyncTestClient, settings: Settings) -> dict[str, str]:
    admin = await platform_admin(client, settings)
    return (await make_tenant_user(client, admin, unique("acme"), "editor"))[1]


def _revised_body(name: str) -> dict[str, Any]:
    """Revision 2 of pipeline_body(name): one step changed, one swapped, one field."""
    body = pipeline_body(name, description="reads, filters, writes twice")
    body["steps"][1]["config"] = {"expression": "status == 'refunded'"}
    body["steps"][2] = {
        "name": "archive",
        "plugin": "Output.file",
        "config": {"path": "archive.jsonl"},
        "depends_on": ["paid"],
    }
    return body


async def test_create_list_get_and_filter(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    editor = await _editor(client, module_settings)
    created = await create_pipeline(client, editor, "alpha")
    assert created["revision"] == 1 and created["version"] == 1
    assert isinstance(created["position"], int) and created["position"] > 0
    assert [s["name"] for s in created["steps"]] == ["read", "paid", "write"]
    await create_pipeline(client, editor, "beta", tags=["ml"])
    last = await create_pipeline(client, editor, "gamma", tags=["ml", "daily"])
    seen = {"min_position": last["position"]}

    listed = await client.get(BASE, params=seen, headers=editor)
    assert listed.status_code == 200, listed.text
    page = listed.json()
    assert [p["name"] for p in page["items"]] == ["alpha", "beta", "gamma"]
    assert page["next_cursor"] is None
    assert page["items"][0]["id"] == created["id"]

    by_tag = await client.get(BASE, params={**seen, "tag": "ml"}, headers=editor)
    assert sorted(p["name"] for p in by_tag.json()["items"]) == ["beta", "gamma"]
    by_tag = await client.get(BASE, params={**seen, "tag": "daily"}, headers=editor)
    assert sorted(p["name"] for p in by_tag.json()["items"]) == ["alpha", "gamma"]
    both = await client.get(
        BASE, params=[*seen.items(), ("tag", "ml"), ("tag", "daily")], headers=editor
    )
    assert [p["name"] for p in both.json()["items"]] == ["gamma"]  # every tag, not any
    by_name = await client.get(BASE, params={**seen, "name": "BETA"}, headers=editor)
    assert [p["name"] for p in by_name.json()["items"]] == ["beta"]
    nothing = await client.get(BASE, params={**seen, "name": "%"}, headers=editor)
    assert nothing.json()["items"] == []

    got = await client.get(f"{BASE}/{created['id']}", params=seen, headers=editor)
    assert got.status_code == 200, got.text
    assert got.headers["etag"] == '"1"'
    body = got.json()
    for key in ("id", "name", "description", "tags", "steps", "revision", "version"):
        assert body[key] == created[key], key
    assert body["created_by"] == created["created_by"]
    assert body["created_by"].startswith("user:")


async def test_cursor_pagination_walks_every_pipeline_once(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    editor = await _editor(client, module_settings)
    names = [f"p{i}" for i in range(7)]
    position = 0
    for name in names:
        position = (await create_pipeline(client, editor, name))["position"]
    for sort, order, expected in (
        ("created_at", "asc", names),
        ("name", "desc", sorted(names, reverse=True)),
    ):
        params: dict[str, Any] = {
            "limit": 3,
            "min_position": position,
            "sort": sort,
            "order": order,
        }
        seen: list[str] = []
        sizes: list[int] = []
        while True:
            response = await client.get(BASE, params=params, headers=editor)
            assert response.status_code == 200, response.text
            page = response.json()
            sizes.append(len(page["items"]))
            seen += [p["name"] for p in page["items"]]
            if page["next_cursor"] is None:
                break
            params["cursor"] = page["next_cursor"]
            assert len(sizes) < 5, "pagination does not terminate"
        assert seen == expected
        assert sizes == [3, 3, 1]


async def test_revise_with_etags(module_app: AsyncTestClient, module_settings: Settings) -> None:
    client = module_app
    editor = await _editor(client, module_settings)
    created = await create_pipeline(client, editor, "alpha")
    url = f"{BASE}/{created['id']}"

    revised = await client.put(url, json=_revised_body("alpha"), headers=editor)
    assert revised.status_code == 200, revised.text
    assert revised.json()["revision"] == 2 and revised.json()["changed"] is True
    assert revised.json()["version"] == 2
    assert revised.headers["etag"] == '"2"'

    same = await client.put(url, json=_revised_body("alpha"), headers=editor)
    assert same.status_code == 200, same.text
    assert same.json()["revision"] == 2 and same.json()["changed"] is False
    assert same.json()["position"] is None

    stale = await client.put(
        url, json=pipeline_body("alpha"), headers={**editor, "If-Match": '"1"'}
    )
    assert_error(stale, 412, "VERSION_CONFLICT")
    # If-Match compares strongly: a weak tag never matches, even the current version.
    weak = await client.put(
        url, json=pipeline_body("alpha"), headers={**editor, "If-Match": 'W/"2"'}
    )
    assert_error(weak, 412, "VERSION_CONFLICT")

    got = await client.get(url, params={"min_position": revised.json()["position"]}, headers=editor)
    assert got.headers["etag"] == '"2"'
    assert got.json()["revision"] == 2
    current = await client.put(
        url, json=pipeline_body("alpha"), headers={**editor, "If-Match": got.headers["etag"]}
    )
    assert current.status_code == 200, current.text
    assert current.json()["revision"] == 3


async def test_history_revisions_and_rollback(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    editor = await _editor(client, module_settings)
    created = await create_pipeline(client, editor, "alpha")
    url = f"{BASE}/{created['id']}"
    assert (await client.put(url, json=_revised_body("alpha"), headers=editor)).is_success

    history = (await client.get(f"{url}/history", headers=editor)).json()["items"]
    assert [(h["revision"], h["kind"]) for h in history] == [(1, "created"), (2, "revised")]
    for item in history:
        assert item["actor"] == created["created_by"] and item["at"]
    assert history[0]["changes"]["steps_added"] == ["read", "paid", "write"]
    assert history[1]["changes"] == {
        "steps_added": ["archive"],
        "steps_removed": ["write"],
        "steps_changed": ["paid"],
        "fields_changed": ["description"],
    }

    first = await client.get(f"{url}/revisions/1", headers=editor)
    assert first.status_code == 200, first.text
    assert first.json()["steps"] == created["steps"]
    assert first.json()["description"] == created["description"]
    assert_error(await client.get(f"{url}/revisions/9", headers=editor), 404, "RESOURCE_NOT_FOUND")

    rolled = await client.post(f"{url}/rollback", json={"revision": 1}, headers=editor)
    assert rolled.status_code == 200, rolled.text
    body = rolled.json()
    assert {k: body[k] for k in ("revision", "rolled_back_to", "previous_revision")} == {
        "revision": 3,
        "rolled_back_to": 1,
        "previous_revision": 2,
    }
    assert isinstance(body["position"], int)
    got = await client.get(url, params={"min_position": body["position"]}, headers=editor)
    assert got.json()["revision"] == 3
    assert got.json()["steps"] == created["steps"]
    assert got.json()["description"] == created["description"]

    history = (await client.get(f"{url}/history", headers=editor)).json()["items"]
    assert [h["kind"] for h in history] == ["created", "revised", "rolled_back"]
    assert history[2]["rolled_back_to"] == 1
    assert history[2]["changes"]["steps_added"] == ["write"]
    assert history[2]["changes"]["steps_removed"] == ["archive"]

    # One that does not exist (invalid), and the current one (a conflict with the state).
    for revision, status, code in ((7, 422, "VALIDATION_ERROR"), (3, 409, "RESOURCE_CONFLICT")):
        refused = await client.post(f"{url}/rollback", json={"revision": revision}, headers=editor)
        error = assert_error(refused, status, code)
        assert [d["field"] for d in error["details"]] == ["revision"]
    zero = await client.post(f"{url}/rollback", json={"revision": 0}, headers=editor)
    assert_error(zero, 422, "VALIDATION_ERROR")
    assert len((await client.get(f"{url}/history", headers=editor)).json()["items"]) == 3


async def test_clone_validate_and_delete(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    editor = await _editor(client, module_settings)
    created = await create_pipeline(client, editor, "alpha")
    url = f"{BASE}/{created['id']}"
    await client.put(url, json=_revised_body("alpha"), headers=editor)

    clone = await client.post(f"{url}/clone", json={"name": "alpha-copy"}, headers=editor)
    assert clone.status_code == 201, clone.text
    copy = clone.json()
    assert copy["id"] != created["id"] and copy["name"] == "alpha-copy"
    assert copy["revision"] == 1
    assert copy["cloned_from"] == {"pipeline_id": created["id"], "revision": 2}
    assert [s["name"] for s in copy["steps"]] == ["read", "paid", "archive"]
    taken = await client.post(f"{url}/clone", json={"name": "alpha"}, headers=editor)
    assert_error(taken, 409, "RESOURCE_CONFLICT")

    valid = await client.post(f"{url}/validate", headers=editor)
    assert valid.status_code == 200, valid.text
    assert valid.json() == {"valid": True, "errors": []}
    bad = pipeline_body("x", steps=[{"name": "r", "plugin": "Input.file", "config": {}}])
    checked = await client.post(f"{BASE}/validate", json=bad, headers=editor)
    assert checked.status_code == 200, checked.text
    assert checked.json()["valid"] is False
    assert {"field": "steps[0].config.path", "message": "required"} in checked.json()["errors"]
    ok = await client.post(f"{BASE}/validate", json=pipeline_body("x"), headers=editor)
    assert ok.json() == {"valid": True, "errors": []}

    deleted = await client.delete(url, headers=editor)
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["deleted"] is True
    seen = {"min_position": deleted.json()["position"]}
    assert_error(await client.get(url, params=seen, headers=editor), 404, "RESOURCE_NOT_FOUND")
    listed = await client.get(BASE, params=seen, headers=editor)
    assert [p["name"] for p in listed.json()["items"]] == ["alpha-copy"]
    history = await client.get(f"{url}/history", headers=editor)
    assert history.status_code == 200, history.text
    items = history.json()["items"]
    assert [(h["revision"], h["kind"]) for h in items] == [
        (1, "created"),
        (2, "revised"),
        (2, "deleted"),  # who deleted it and when stay in the history
    ]
    assert items[-1]["actor"].startswith("user:")
    for method, path in (("PUT", url), ("DELETE", url), ("POST", f"{url}/clone")):
        body = {"name": "again"} if path.endswith("clone") else pipeline_body("alpha")
        response = await client.request(
            method, path, json=None if method == "DELETE" else body, headers=editor
        )
        assert_error(response, 404, "RESOURCE_NOT_FOUND")
    # The name is free again once its holder is deleted.
    await create_pipeline(client, editor, "alpha")


async def test_custom_method_spellings_reach_the_same_routes(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    editor = await _editor(client, module_settings)
    created = await create_pipeline(client, editor, "alpha")
    url = f"{BASE}/{created['id']}"
    await client.put(url, json=_revised_body("alpha"), headers=editor)

    rolled = await client.post(f"{url}:rollback", json={"revision": 1}, headers=editor)
    assert rolled.status_code == 200, rolled.text
    assert rolled.json()["revision"] == 3 and rolled.json()["rolled_back_to"] == 1
    clone = await client.post(f"{url}:clone", json={"name": "beta"}, headers=editor)
    assert clone.status_code == 201, clone.text
    assert clone.json()["cloned_from"] == {"pipeline_id": created["id"], "revision": 3}
    valid = await client.post(f"{url}:validate", headers=editor)
    assert valid.status_code == 200, valid.text
    assert valid.json()["valid"] is True
    unknown = await client.post(f"{url}:explode", headers=editor)
    assert unknown.status_code in (404, 405), unknown.text
    assert unknown.json()["error"]["code"] in ("RESOURCE_NOT_FOUND", "METHOD_NOT_ALLOWED")
