"""Creating and revising a pipeline on the dashboard over the real app: the definition as
JSON in a form, saved by the API's own use cases. A refusal (not JSON, a schema error, a
domain error, a taken name, a stale form) is shown above the text with the API's status
and message, the text kept and nothing saved; a viewer is offered neither form and is
refused posting; another tenant's pipeline is a 404 page."""

from __future__ import annotations

import html
import json
import re

from litestar.testing import AsyncTestClient

from infrastructure.settings import Settings
from tests.integration.api_client import (
    create_pipeline,
    make_tenant_user,
    platform_admin,
    unique,
    visible,
)
from tests.integration.ui_forms import signed_in, text_of

PIPELINES = "/api/v1/pipelines"


async def test_create_and_revise_with_the_apis_refusals_on_the_form(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    padmin = await platform_admin(client, module_settings)
    tenant = unique("editor")
    _, editor = await make_tenant_user(client, padmin, tenant, "editor")
    taken = await create_pipeline(client, editor, "already-here")
    csrf = await signed_in(client, f"{tenant}-editor".lower())

    listing = await client.get("/ui/pipelines")
    assert 'href="/ui/pipelines/new"' in listing.text
    form = await client.get("/ui/pipelines/new")
    example = json.loads(text_of(form.text))  # the form starts with a valid definition
    assert example["steps"]

    # Refusals: each the API's status and message, the text kept, nothing saved.
    for text, status, words in (
        ("{not json", 400, "JSON is malformed"),
        (json.dumps({"name": "x", "steps": "many"}), 422, "steps"),
        (json.dumps({**example, "name": "already-here"}), 409, "already-here"),
        (
            json.dumps({**example, "steps": [{"name": "a", "plugin": "No.such", "config": {}}]}),
            422,
            "No.such",
        ),
    ):
        refused = await client.post(
            "/ui/pipelines/new",
            data={"definition": text, "csrf_token": csrf},
            follow_redirects=False,
        )
        assert refused.status_code == status, (text, refused.status_code, refused.text[:2000])
        assert words in html.unescape(refused.text), (words, refused.text[:3000])
        assert text_of(refused.text) == text
    # At the read model's position of the first pipeline (it may still be on its way).
    api_list = await client.get(
        PIPELINES, params={"min_position": taken["position"]}, headers=editor
    )
    assert [p["name"] for p in api_list.json()["items"]] == ["already-here"]

    made = await client.post(
        "/ui/pipelines/new",
        data={"definition": json.dumps({**example, "name": "from-the-ui"}), "csrf_token": csrf},
        follow_redirects=False,
    )
    assert made.status_code == 303, made.text
    location = made.headers["location"]
    pipeline_id = location.split("/ui/pipelines/")[1].split("?")[0]
    shown = await client.get(location)
    assert shown.status_code == 200 and "from-the-ui" in shown.text
    assert f'href="/ui/pipelines/{pipeline_id}/edit"' in shown.text

    # Edit: the form holds the current definition; a save is revision 2.
    edit = await client.get(f"/ui/pipelines/{pipeline_id}/edit")
    current = json.loads(text_of(edit.text))
    assert current["name"] == "from-the-ui"
    stale_version = re.search(r'name="version" value="(\d+)"', edit.text)
    assert stale_version
    revised = await client.post(
        f"/ui/pipelines/{pipeline_id}/edit",
        data={
            "definition": json.dumps({**current, "description": "from the form"}),
            "version": stale_version.group(1),
            "csrf_token": csrf,
        },
        follow_redirects=False,
    )
    assert revised.status_code == 303, revised.text
    at = revised.headers["location"].split("min_position=")[1]
    got = await client.get(f"{PIPELINES}/{pipeline_id}?min_position={at}", headers=editor)
    assert (got.json()["revision"], got.json()["description"]) == (2, "from the form")

    # The form read at revision 1 is stale now: the API's 412 (as a stale If-Match),
    # nothing saved, and the form says how to go on.
    stale = await client.post(
        f"/ui/pipelines/{pipeline_id}/edit",
        data={
            "definition": json.dumps({**current, "description": "overwrite"}),
            "version": stale_version.group(1),
            "csrf_token": csrf,
        },
        follow_redirects=False,
    )
    assert stale.status_code == 412, stale.text[:2000]
    assert "overwrite" in text_of(stale.text) and "newer version" in stale.text
    got = await client.get(f"{PIPELINES}/{pipeline_id}", headers=editor)
    assert (got.json()["revision"], got.json()["description"]) == (2, "from the form")

    # A name another pipeline holds: the API's conflict on the form.
    renamed = await client.post(
        f"/ui/pipelines/{pipeline_id}/edit",
        data={"definition": json.dumps({**current, "name": taken["name"]}), "csrf_token": csrf},
        follow_redirects=False,
    )
    assert renamed.status_code == 409 and "already-here" in renamed.text
    no_token = await client.post(
        f"/ui/pipelines/{pipeline_id}/edit",
        data={"definition": json.dumps(current)},
        follow_redirects=False,
    )
    assert no_token.status_code == 403
    client.cookies.clear()


async def test_a_viewer_is_offered_no_editor_and_another_tenant_gets_404(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    padmin = await platform_admin(client, module_settings)
    tenant = unique("edit-view")
    tenant_id, editor = await make_tenant_user(client, padmin, tenant, "editor")
    pipeline = await create_pipeline(client, editor, "viewed")
    await visible(client, editor, f"{PIPELINES}/{pipeline['id']}", pipeline["position"])
    viewer_name = f"{tenant}-viewer".lower()
    created = await client.post(
        "/api/v1/users",
        json={
            "username": viewer_name,
            "password": "correct-horse-battery-staple",
            "tenant_id": tenant_id,
            "roles": ["viewer"],
        },
        headers=padmin,
    )
    assert created.status_code == 201, created.text
    csrf = await signed_in(client, viewer_name)
    assert 'href="/ui/pipelines/new"' not in (await client.get("/ui/pipelines")).text
    page = await client.get(f"/ui/pipelines/{pipeline['id']}")
    assert page.status_code == 200 and "/edit" not in page.text
    for method, path in (
        ("GET", "/ui/pipelines/new"),
        ("POST", "/ui/pipelines/new"),
        ("GET", f"/ui/pipelines/{pipeline['id']}/edit"),
        ("POST", f"/ui/pipelines/{pipeline['id']}/edit"),
    ):
        data = {"definition": "{}", "csrf_token": csrf} if method == "POST" else None
        refused = await client.request(method, path, data=data, follow_redirects=False)
        assert refused.status_code == 403, (method, path, refused.status_code)

    other = unique("edit-other")
    await make_tenant_user(client, padmin, other, "admin")
    csrf = await signed_in(client, f"{other}-admin".lower())
    for method in ("GET", "POST"):
        data = {"definition": "{}", "csrf_token": csrf} if method == "POST" else None
        answer = await client.request(
            method, f"/ui/pipelines/{pipeline['id']}/edit", data=data, follow_redirects=False
        )
        assert answer.status_code == 404, (method, answer.status_code)
        assert "viewed" not in answer.text
    client.cookies.clear()
    after = await client.get(f"{PIPELINES}/{pipeline['id']}", headers=editor)
    assert after.json()["revision"] == 1


async def test_delete_from_the_edit_page(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    """Delete is on the edit page: refused (the API's 409) while a deployment of the
    pipeline is live, done once it is retired; the list no longer shows it."""
    client = module_app
    padmin = await platform_admin(client, module_settings)
    tenant = unique("deleter")
    _, editor = await make_tenant_user(client, padmin, tenant, "admin")
    pipeline = await create_pipeline(client, editor, "short-lived")
    deployment = await client.post(
        "/api/v1/deployments",
        json={"pipeline_id": pipeline["id"], "environment": "staging"},
        headers=editor,
    )
    assert deployment.status_code == 201, deployment.text
    csrf = await signed_in(client, f"{tenant}-admin".lower())
    edit = await client.get(f"/ui/pipelines/{pipeline['id']}/edit")
    assert 'data-action="delete"' in edit.text
    path = f"/ui/pipelines/{pipeline['id']}/delete"
    refused = await client.post(path, data={"csrf_token": csrf}, follow_redirects=False)
    assert refused.status_code == 409, refused.text[:2000]
    retired = await client.delete(f"/api/v1/deployments/{deployment.json()['id']}", headers=editor)
    assert retired.status_code == 200, retired.text
    deleted = await client.post(path, data={"csrf_token": csrf}, follow_redirects=False)
    assert deleted.status_code == 303, deleted.text
    listing = await client.get(deleted.headers["location"])
    assert listing.status_code == 200 and "short-lived" not in listing.text
    gone = await client.get(f"{PIPELINES}/{pipeline['id']}", headers=editor)
    assert gone.status_code == 404
    client.cookies.clear()
