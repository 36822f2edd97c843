"""The API's conventions that hold on every route (README "Errors" and "Query
parameters"): unknown query parameters are refused, `fields=` selects top-level fields,
and a stale If-Match tells the client the version to re-read and where to wait for it."""

from __future__ import annotations

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


async def test_unknown_query_parameters_are_refused_naming_them(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    admin = await platform_admin(client, module_settings)
    _, editor = await make_tenant_user(client, admin, unique("acme"), "editor")
    made = await create_pipeline(client, editor, "one")
    url = f"{BASE}/{made['id']}"
    for path, params in (
        (BASE, {"offset": "10"}),  # a cursor list must not answer page 1 instead
        (BASE, {"limit": "5", "sort_by": "name"}),
        (url, {"x": "1"}),
        (f"{url}/history", {"min_position": "1"}),  # read from the store: takes none
    ):
        response = await client.get(path, params=params, headers=editor)
        error = assert_error(response, 400, "VALIDATION_ERROR")
        unknown = sorted(set(params) - {"limit"})
        assert [d["field"] for d in error["details"]] == unknown, error
    wrote = await client.post(BASE, params={"dry": "1"}, json=pipeline_body("two"), headers=editor)
    assert_error(wrote, 400, "VALIDATION_ERROR")
    listed = await client.get(BASE, params={"min_position": made["position"]}, headers=editor)
    assert [p["name"] for p in listed.json()["items"]] == ["one"]  # "two" was not created
    assert_error(await client.get("/health", params={"verbose": "1"}), 400, "VALIDATION_ERROR")


async def test_fields_selects_top_level_fields_of_an_object_and_of_each_item(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    admin = await platform_admin(client, module_settings)
    _, editor = await make_tenant_user(client, admin, unique("acme"), "editor")
    made = await create_pipeline(client, editor, "one")
    seen = {"min_position": made["position"]}
    url = f"{BASE}/{made['id']}"

    got = await client.get(url, params={**seen, "fields": "id,version"}, headers=editor)
    assert got.status_code == 200, got.text
    assert got.json() == {"id": made["id"], "version": 1}
    assert got.headers["etag"] == '"1"'  # headers are the whole resource's
    listed = await client.get(BASE, params={**seen, "fields": "name, tags"}, headers=editor)
    assert listed.json() == {
        "items": [{"name": "one", "tags": ["etl", "daily"]}],
        "next_cursor": None,
        "has_more": False,
    }
    first = await client.get(BASE, params={**seen, "limit": 1}, headers=editor)
    assert (first.json()["has_more"], first.json()["next_cursor"]) == (False, None)
    two = await create_pipeline(client, editor, "two")
    first = await client.get(
        BASE, params={"limit": 1, "min_position": two["position"]}, headers=editor
    )
    assert first.json()["has_more"] is True and first.json()["next_cursor"]
    repeated = await client.get(f"{url}?fields=id&fields=name", headers=editor)
    assert repeated.json() == {"id": made["id"], "name": "one"}

    for fields in ("id,secret", "", "items"):
        refused = await client.get(url, params={"fields": fields}, headers=editor)
        error = assert_error(refused, 400, "VALIDATION_ERROR")
        assert error["details"][0]["field"] == "fields"
    # Writes answer what they answer: fields= is not one of their parameters.
    wrote = await client.post(
        BASE, params={"fields": "id"}, json=pipeline_body("x"), headers=editor
    )
    assert_error(wrote, 400, "VALIDATION_ERROR")


async def test_a_stale_if_match_carries_the_current_version_and_where_to_read_it(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    admin = await platform_admin(client, module_settings)
    _, editor = await make_tenant_user(client, admin, unique("acme"), "editor")
    made = await create_pipeline(client, editor, "one")
    url = f"{BASE}/{made['id']}"
    revised = await client.put(
        url, json=pipeline_body("one", description="v2"), headers={**editor, "If-Match": '"1"'}
    )
    assert revised.status_code == 200, revised.text

    stale = await client.put(
        url, json=pipeline_body("one", description="v3"), headers={**editor, "If-Match": '"1"'}
    )
    error = assert_error(stale, 412, "VERSION_CONFLICT")
    assert stale.headers["etag"] == '"2"'
    [detail] = error["details"]
    assert (detail["field"], detail["current_version"]) == ("If-Match", 2)
    assert detail["position"] == revised.json()["position"]
    # What the client does next: re-read where the winning write is visible, then retry.
    fresh = await client.get(url, params={"min_position": detail["position"]}, headers=editor)
    assert (fresh.headers["etag"], fresh.json()["description"]) == ('"2"', "v2")
    retried = await client.put(
        url,
        json=pipeline_body("one", description="v3"),
        headers={**editor, "If-Match": fresh.headers["etag"]},
    )
    assert retried.status_code == 200, retried.text


async def test_lists_page_by_number_with_a_total_and_links_or_by_cursor_never_both(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    admin = await platform_admin(client, module_settings)
    _, editor = await make_tenant_user(client, admin, unique("acme"), "editor")
    made = [await create_pipeline(client, editor, f"p{i}") for i in range(5)]
    seen = {"min_position": made[-1]["position"], "sort": "name"}

    second = await client.get(BASE, params={**seen, "page": 2, "per_page": 2}, headers=editor)
    assert second.status_code == 200, second.text
    assert [p["name"] for p in second.json()["items"]] == ["p2", "p3"]
    assert (second.json()["has_more"], second.json()["next_cursor"]) == (True, None)
    assert second.headers["x-total-count"] == "5"
    links = dict(
        (part.split(";")[1].strip(), part.split(";")[0].strip(" <>"))
        for part in second.headers["link"].split(",")
    )
    assert set(links) == {'rel="first"', 'rel="prev"', 'rel="next"', 'rel="last"'}
    last = await client.get(links['rel="last"'], headers=editor)
    assert [p["name"] for p in last.json()["items"]] == ["p4"]
    assert last.json()["has_more"] is False and "next" not in last.headers["link"]
    beyond = await client.get(BASE, params={**seen, "page": 9, "per_page": 2}, headers=editor)
    assert beyond.json()["items"] == [] and beyond.headers["x-total-count"] == "5"

    by_cursor = await client.get(BASE, params={**seen, "limit": 3}, headers=editor)
    assert by_cursor.json()["has_more"] is True and "x-total-count" not in by_cursor.headers
    next_link = by_cursor.headers["link"].split(";")[0].strip("<>")
    rest = await client.get(next_link, headers=editor)
    assert [p["name"] for p in rest.json()["items"]] == ["p3", "p4"]
    assert rest.json()["has_more"] is False and "link" not in rest.headers

    for mixed in ({"page": 1, "limit": 2}, {"per_page": 2, "cursor": "x"}):
        error = assert_error(
            await client.get(BASE, params=mixed, headers=editor), 400, "VALIDATION_ERROR"
        )
        assert {d["field"] for d in error["details"]} <= {"limit", "cursor"}
    for bad in ({"page": 0}, {"per_page": 501}):
        error = assert_error(
            await client.get(BASE, params=bad, headers=editor), 400, "VALIDATION_ERROR"
        )
        # Named, without Litestar's echo of the request line and query string.
        assert error["message"] == f"invalid parameter(s): {next(iter(bad))}", error


async def test_options_answers_the_allowed_methods_and_odd_action_paths_are_not_found(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    admin = await platform_admin(client, module_settings)
    allowed = await client.options("/api/v1/plugins")  # no credentials: a CORS preflight
    assert allowed.status_code == 204, allowed.text
    assert set(allowed.headers["allow"].replace(" ", "").split(",")) == {"GET", "OPTIONS"}
    # An id holding a colon is a malformed id, not an unknown method.
    odd = await client.post("/api/v1/runs/a:b:retry", json={}, headers=admin)
    assert_error(odd, 400, "VALIDATION_ERROR")


async def test_a_malformed_path_parameter_is_400_naming_it_and_an_unknown_path_404(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    admin = await platform_admin(client, module_settings)
    _, editor = await make_tenant_user(client, admin, unique("acme"), "editor")
    made = await create_pipeline(client, editor, "one")
    for path, field in (
        ("/api/v1/pipelines/not-a-uuid", "pipeline_id"),
        ("/api/v1/runs/123", "run_id"),
        (f"/api/v1/pipelines/{made['id']}/revisions/first", "revision"),
    ):
        error = assert_error(await client.get(path, headers=editor), 400, "VALIDATION_ERROR")
        assert error["details"] == [{"field": field, "message": error["message"]}], error
    for path in ("/api/v1/nope", f"/api/v1/pipelines/{made['id']}/nope"):
        assert_error(await client.get(path, headers=editor), 404, "RESOURCE_NOT_FOUND")
