"""Creating and editing a scheduled job on the dashboard over the real app: the JSON body
of the API's create and replace, saved by its use cases. A bad cron expression, an
unknown time zone, a stale form are the API's answers above the kept text, nothing
saved; a viewer is offered neither form and refused posting; another tenant's job is a
404 page."""

from __future__ import annotations

import html
import json
import re
from typing import Any

from litestar.testing import AsyncTestClient

from infrastructure.settings import Settings
from tests.integration.api_client import create_pipeline, make_tenant_user, platform_admin, unique
from tests.integration.run_helpers import poll
from tests.integration.test_ui import PASSWORD
from tests.integration.ui_forms import signed_in, text_of

JOBS = "/api/v1/scheduler/jobs"


async def test_create_and_edit_a_schedule(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    padmin = await platform_admin(client, module_settings)
    tenant = unique("jobedit")
    tenant_id, admin = await make_tenant_user(client, padmin, tenant, "admin")
    pipeline = await create_pipeline(client, admin, "nightly-source")
    csrf = await signed_in(client, f"{tenant}-admin".lower(), "/ui/jobs")

    assert 'href="/ui/jobs/new"' in (await client.get("/ui/jobs")).text

    async def form_example() -> dict[str, Any] | None:
        # The form's example names a pipeline from the read model, once it holds one.
        example = json.loads(text_of((await client.get("/ui/jobs/new")).text))
        return None if "<" in example["target"]["pipeline_id"] else example

    example = await poll(form_example, "the new pipeline in the job form's example")
    assert example["target"] == {"pipeline_id": pipeline["id"]}  # the tenant's pipeline

    for changes, status, words in (
        ({"cron_expr": "61 * * * *"}, 422, "cron_expr"),
        ({"timezone": "Mars/Olympus"}, 422, "Mars/Olympus"),
        ({"target": {}}, 422, "target"),
    ):
        text = json.dumps({**example, **changes})
        refused = await client.post(
            "/ui/jobs/new", data={"definition": text, "csrf_token": csrf}, follow_redirects=False
        )
        assert refused.status_code == status, (changes, refused.status_code, refused.text[:2000])
        assert words in html.unescape(refused.text), (words, refused.text[:3000])
        assert text_of(refused.text) == text
    assert (await client.get(JOBS, headers=admin)).json()["items"] == []

    made = await client.post(
        "/ui/jobs/new",
        data={
            "definition": json.dumps({**example, "timezone": "Asia/Kolkata"}),
            "csrf_token": csrf,
        },
        follow_redirects=False,
    )
    assert made.status_code == 303, made.text
    location = made.headers["location"]
    job_id = location.split("/ui/jobs/")[1].split("?")[0]
    shown = await client.get(location)
    assert shown.status_code == 200 and "Asia/Kolkata" in shown.text
    assert f'href="/ui/jobs/{job_id}/edit"' in shown.text

    edit = await client.get(f"/ui/jobs/{job_id}/edit")
    current = json.loads(text_of(edit.text))
    assert (current["cron_expr"], current["timezone"]) == ("0 3 * * *", "Asia/Kolkata")
    version = re.search(r'name="version" value="(\d+)"', edit.text)
    assert version
    saved = await client.post(
        f"/ui/jobs/{job_id}/edit",
        data={
            "definition": json.dumps({**current, "cron_expr": "30 4 * * *"}),
            "version": version.group(1),
            "csrf_token": csrf,
        },
        follow_redirects=False,
    )
    assert saved.status_code == 303, saved.text
    at = saved.headers["location"].split("min_position=")[1]
    job = (await client.get(f"{JOBS}/{job_id}?min_position={at}", headers=admin)).json()
    assert (job["cron_expr"], job["timezone"], job["enabled"]) == (
        "30 4 * * *",
        "Asia/Kolkata",
        True,
    )

    stale = await client.post(
        f"/ui/jobs/{job_id}/edit",
        data={
            "definition": json.dumps({**current, "cron_expr": "0 5 * * *"}),
            "version": version.group(1),
            "csrf_token": csrf,
        },
        follow_redirects=False,
    )
    assert stale.status_code == 412 and "0 5 * * *" in text_of(stale.text)
    job = (await client.get(f"{JOBS}/{job_id}", headers=admin)).json()
    assert job["cron_expr"] == "30 4 * * *"

    # A viewer: offered neither form, refused both.
    viewer = await client.post(
        "/api/v1/users",
        json={
            "username": f"{tenant}-watcher".lower(),
            "password": PASSWORD,
            "tenant_id": tenant_id,
            "roles": ["viewer"],
        },
        headers=padmin,
    )
    assert viewer.status_code == 201, viewer.text
    csrf = await signed_in(client, f"{tenant}-watcher".lower(), "/ui/jobs")
    assert 'href="/ui/jobs/new"' not in (await client.get("/ui/jobs")).text
    assert "/edit" not in (await client.get(f"/ui/jobs/{job_id}")).text
    for method, path in (
        ("GET", "/ui/jobs/new"),
        ("POST", "/ui/jobs/new"),
        ("GET", f"/ui/jobs/{job_id}/edit"),
        ("POST", f"/ui/jobs/{job_id}/edit"),
    ):
        data = {"definition": "{}", "csrf_token": csrf} if method == "POST" else None
        answer = await client.request(method, path, data=data, follow_redirects=False)
        assert answer.status_code == 403, (method, path, answer.status_code)

    # Another tenant's admin: the job is not found, by page or by post.
    other = unique("jobedit-b")
    await make_tenant_user(client, padmin, other, "admin")
    csrf = await signed_in(client, f"{other}-admin".lower(), "/ui/jobs")
    for method in ("GET", "POST"):
        data = {"definition": json.dumps(current), "csrf_token": csrf} if method == "POST" else None
        answer = await client.request(
            method, f"/ui/jobs/{job_id}/edit", data=data, follow_redirects=False
        )
        assert answer.status_code == 404, (method, answer.status_code)
        assert "nightly" not in answer.text
    client.cookies.clear()
    job = (await client.get(f"{JOBS}/{job_id}", headers=admin)).json()
    assert job["cron_expr"] == "30 4 * * *"


async def test_delete_a_schedule_from_its_edit_page(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    padmin = await platform_admin(client, module_settings)
    tenant = unique("jobdel")
    _, admin = await make_tenant_user(client, padmin, tenant, "admin")
    pipeline = await create_pipeline(client, admin, "source")
    made = await client.post(
        JOBS,
        json={"name": "doomed", "target": {"pipeline_id": pipeline["id"]}, "cron_expr": "@daily"},
        headers=admin,
    )
    assert made.status_code == 201, made.text
    job_id = made.json()["id"]
    csrf = await signed_in(client, f"{tenant}-admin".lower(), "/ui/jobs")
    seen = await client.get(
        f"{JOBS}/{job_id}?min_position={made.json()['position']}", headers=admin
    )
    assert seen.status_code == 200, seen.text
    edit = await client.get(f"/ui/jobs/{job_id}/edit")
    assert edit.status_code == 200 and 'data-action="delete"' in edit.text
    deleted = await client.post(
        f"/ui/jobs/{job_id}/delete", data={"csrf_token": csrf}, follow_redirects=False
    )
    assert deleted.status_code == 303, deleted.text
    listing = await client.get(deleted.headers["location"])
    assert listing.status_code == 200 and "doomed" not in listing.text
    assert (await client.get(f"{JOBS}/{job_id}", headers=admin)).status_code == 404
    client.cookies.clear()
