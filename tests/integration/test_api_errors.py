"""Every error leaves in the documented shape, with the right status and the request id,
and nothing a client can send produces a 500. One app serves the module (each test in a
tenant of its own); the tests of a setting (body size, min_position wait) start theirs."""

from __future__ import annotations

import dataclasses

import pytest
from litestar.testing import AsyncTestClient

from infrastructure.settings import Settings
from tests.integration.api_client import (
    assert_error,
    create_pipeline,
    login,
    make_tenant_user,
    pipeline_body,
    platform_admin,
    running_app,
    unique,
)

BASE = "/api/v1/pipelines"


async def test_request_bodies_are_checked(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    admin = await platform_admin(client, module_settings)
    _, editor = await make_tenant_user(client, admin, unique("acme"), "editor")
    json_headers = {**editor, "Content-Type": "application/json"}

    # 400: a body that cannot be read as a JSON object.
    for raw in (b'{"name": "x", "steps": [', b"not json at all", b"[1, 2]", b""):
        response = await client.post(BASE, content=raw, headers=json_headers)
        error = assert_error(response, 400, "VALIDATION_ERROR")
        assert all(set(d) == {"field", "message"} for d in error["details"]), error

    # 422: a JSON object whose fields are wrong, each named by its path.
    unknown = await client.post(BASE, json=pipeline_body("x", owner="me"), headers=editor)
    error = assert_error(unknown, 422, "VALIDATION_ERROR")
    assert error["details"] == [
        {"field": "owner", "message": "Object contains unknown field `owner`"}
    ]
    nested = pipeline_body("x")
    nested["steps"][0]["retry"] = 3
    response = await client.post(BASE, json=nested, headers=editor)
    error = assert_error(response, 422, "VALIDATION_ERROR")
    assert error["details"] == [
        {"field": "steps[0].retry", "message": "Object contains unknown field `retry`"}
    ]
    for wrong, field in (
        ({"name": 123}, "name"),
        ({"steps": "read"}, "steps"),
        ({"tags": [1, 2]}, "tags[0]"),
    ):
        response = await client.post(BASE, json=pipeline_body("x") | wrong, headers=editor)
        error = assert_error(response, 422, "VALIDATION_ERROR")
        assert [d["field"] for d in error["details"]] == [field], error
        assert set(error["details"][0]) == {"field", "message"}
    missing = await client.post(BASE, json={"steps": []}, headers=editor)
    error = assert_error(missing, 422, "VALIDATION_ERROR")
    assert error["details"] == [
        {"field": "name", "message": "Object missing required field `name`"}
    ]

    deep = b"[" * 100_000 + b"]" * 100_000  # past the decoder's recursion limit
    for url in (BASE, "/api/v1/auth/login"):
        response = await client.post(url, content=deep, headers=json_headers)
        assert_error(response, 400, "VALIDATION_ERROR")

    login_garbage = await client.post(
        "/api/v1/auth/login", content=b"{", headers={"Content-Type": "application/json"}
    )
    assert_error(login_garbage, 400, "VALIDATION_ERROR")
    # None of those created anything.
    last = await create_pipeline(client, editor, "real")
    listed = await client.get(BASE, params={"min_position": last["position"]}, headers=editor)
    assert [p["name"] for p in listed.json()["items"]] == ["real"]


async def test_oversized_body_is_413(settings: Settings) -> None:
    small = dataclasses.replace(settings, max_body_bytes=2048)
    async with running_app(small) as client:
        admin = await login(client, settings.admin_username or "", settings.admin_password or "")
        _, editor = await make_tenant_user(client, admin, "acme", "editor")
        big = pipeline_body("big", description="x" * 4000)
        assert_error(await client.post(BASE, json=big, headers=editor), 413, "VALIDATION_ERROR")
        fits = await client.post(BASE, json=pipeline_body("fits"), headers=editor)
        assert fits.status_code == 201, fits.text
        url = f"{BASE}/{fits.json()['id']}"
        assert_error(await client.put(url, json=big, headers=editor), 413, "VALIDATION_ERROR")


async def test_routes_paths_and_queries_that_do_not_fit(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    admin = await platform_admin(client, module_settings)
    _, editor = await make_tenant_user(client, admin, unique("acme"), "editor")
    created = await create_pipeline(client, editor, "alpha")
    url = f"{BASE}/{created['id']}"

    for path in ("/api/v1/nothing-here", "/api/v2/pipelines", "/nope"):
        for headers in (editor, {}):
            response = await client.get(path, headers=headers)
            assert_error(response, 404, "RESOURCE_NOT_FOUND")
    for path in (f"{BASE}/not-a-uuid", f"{BASE}/123/history", f"{url}/revisions/first"):
        response = await client.get(path, headers=editor)  # a malformed path parameter
        assert_error(response, 400, "VALIDATION_ERROR")
    wrong_method = await client.patch(url, json={}, headers=editor)
    assert wrong_method.status_code == 405, wrong_method.text
    assert_error(wrong_method, 405, wrong_method.json()["error"]["code"])

    bad_queries = [
        {"cursor": "garbage!!"},
        {"cursor": "eyJ4IjoxfQ"},  # base64 of {"x":1}
        {"limit": 0},
        {"limit": 501},
        {"limit": "ten"},
        {"sort": "password"},
        {"order": "sideways"},
        {"min_position": -1},
        {"min_position": "soon"},
    ]
    for params in bad_queries:
        response = await client.get(BASE, params=params, headers=editor)
        error = assert_error(response, 400, "VALIDATION_ERROR")
        assert [d["field"] for d in error["details"]] == list(params), error  # named
    # A cursor issued for one sort is refused with another, not silently misapplied.
    for name in ("beta", "gamma"):
        last = (await create_pipeline(client, editor, name))["position"]
    page = await client.get(BASE, params={"limit": 1, "min_position": last}, headers=editor)
    cursor = page.json()["next_cursor"]
    assert cursor
    other_sort = await client.get(
        BASE, params={"limit": 1, "cursor": cursor, "sort": "name"}, headers=editor
    )
    error = assert_error(other_sort, 400, "VALIDATION_ERROR")
    assert [d["field"] for d in error["details"]] == ["cursor"]

    for if_match in ("yesterday", '"abc"'):
        response = await client.put(
            url, json=pipeline_body("alpha"), headers={**editor, "If-Match": if_match}
        )
        error = assert_error(response, 400, "VALIDATION_ERROR")
        assert [d["field"] for d in error["details"]] == ["If-Match"]


async def test_min_position_past_the_read_model_is_503_and_past_the_store_is_400(
    settings: Settings,
) -> None:
    impatient = dataclasses.replace(settings, min_position_timeout=0.5)
    # No projector: what is written is in the store but never in the read models.
    async with running_app(impatient, roles=frozenset({"relay"})) as client:
        admin = await login(client, settings.admin_username or "", settings.admin_password or "")
        tenant_id, editor = await make_tenant_user(client, admin, "acme", projected=False)
        created = await create_pipeline(client, editor, "alpha")
        renamed = await client.put(
            f"/api/v1/tenants/{tenant_id}", json={"description": "moved"}, headers=admin
        )
        assert renamed.status_code == 200, renamed.text
        written = {"min_position": created["position"]}
        for path in (BASE, f"{BASE}/{created['id']}"):
            response = await client.get(path, params=written, headers=editor)
            assert_error(response, 503, "SERVICE_UNAVAILABLE")
            assert response.headers.get("retry-after")
        tenant = await client.get(
            f"/api/v1/tenants/{tenant_id}",
            params={"min_position": renamed.json()["position"]},
            headers=admin,
        )
        assert_error(tenant, 503, "SERVICE_UNAVAILABLE")

        # A position no command has answered yet: a client's mistake, refused at once.
        future = {"min_position": created["position"] + 1_000_000}
        response = await client.get(BASE, params=future, headers=editor)
        error = assert_error(response, 400, "VALIDATION_ERROR")
        assert error["details"][0]["field"] == "min_position"


async def test_request_id_is_echoed_or_made(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    mine = await client.get("/api/v1/auth/me", headers={"X-Request-ID": "req-42.a_b"})
    assert_error(mine, 401, "AUTHENTICATION_REQUIRED")
    assert mine.headers["x-request-id"] == "req-42.a_b"
    assert mine.json()["error"]["request_id"] == "req-42.a_b"

    hostile = await client.get("/api/v1/auth/me", headers={"X-Request-ID": "bad id\twith <stuff>"})
    rid = hostile.headers["x-request-id"]
    assert rid and "<" not in rid and " " not in rid
    assert hostile.json()["error"]["request_id"] == rid

    made = [(await client.get("/health")).headers["x-request-id"] for _ in range(2)]
    assert all(made) and made[0] != made[1]


async def test_nul_in_list_filters_is_400_not_500(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    admin = await platform_admin(client, module_settings)
    _, editor = await make_tenant_user(client, admin, unique("acme"), "editor")
    for params in ({"name": "a\x00b"}, {"tag": "\x00"}):
        response = await client.get(BASE, params=params, headers=editor)
        assert_error(response, 400, "VALIDATION_ERROR")


@pytest.mark.parametrize("where", ["pipeline name", "step config", "tenant name"])
async def test_nul_characters_are_refused_before_they_reach_the_store(
    module_app: AsyncTestClient, module_settings: Settings, where: str
) -> None:
    client = module_app
    admin = await platform_admin(client, module_settings)
    tenant_id, editor = await make_tenant_user(client, admin, unique("acme"), "editor")
    if where == "tenant name":
        response = await client.post("/api/v1/tenants", json={"name": "a\x00b"}, headers=admin)
    else:
        body = pipeline_body("nul\x00name" if where == "pipeline name" else "nul")
        if where == "step config":
            body["steps"][0]["config"]["path"] = "in\x00.jsonl"
        response = await client.post(BASE, json=body, headers=editor)
    assert_error(response, 422, "VALIDATION_ERROR")
    # And the read models keep up.
    after = await create_pipeline(client, editor, "after")
    seen = {"min_position": after["position"]}
    assert (await client.get(BASE, params=seen, headers=editor)).status_code == 200
    tenant = await client.get(f"/api/v1/tenants/{tenant_id}", params=seen, headers=admin)
    assert tenant.status_code == 200, tenant.text


async def test_a_client_hanging_up_mid_body_is_no_server_error(
    module_app: AsyncTestClient, module_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Seen under load: clients that close a connection while its body is on the way were
    logged as unhandled errors with a stack trace, one per request, and counted as 500s."""
    client = module_app
    admin = await platform_admin(client, module_settings)
    _, editor = await make_tenant_user(client, admin, unique("acme"), "editor")
    incoming = [
        {"type": "http.request", "body": b'{"name": "half', "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict] = []

    async def receive() -> dict:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    headers = [(k.lower().encode(), v.encode()) for k, v in editor.items()]
    headers += [(b"content-type", b"application/json"), (b"content-length", b"200")]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": BASE,
        "raw_path": BASE.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
        "state": {},
    }
    with caplog.at_level("INFO"):
        await client.app(scope, receive, send)

    assert sent[0]["type"] == "http.response.start"
    assert sent[0]["status"] == 400
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
    assert any("hung up" in r.getMessage() for r in caplog.records)
