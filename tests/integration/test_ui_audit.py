"""The dashboard's audit page (/ui/audit), the platform admin's tenants with their usage
(/ui/tenants) and a job's backfill (/ui/jobs/{id}/backfill) over the real app,
PostgreSQL and NATS: what each shows (checked against the API's own answer), the API's
refusals as pages, tenant isolation, and what a role is offered and refused."""

from __future__ import annotations

import html
import os
import re
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from application.authorization import ROLE_PERMISSIONS, Permission
from infrastructure.settings import Settings
from tests.integration.api_client import (
    create_pipeline,
    make_tenant_user,
    platform_admin,
    serving_app,
    unique,
)
from tests.integration.deployment_client import read_at
from tests.integration.test_ui import csrf_of, sign_in
from tests.integration.test_ui_deployments_jobs import _job, _signed_in, _viewer

JOBS = "/api/v1/scheduler/jobs"
CHROMIUM = "/usr/bin/chromium"  # as tests/e2e/test_ui_browser.py drives it
NO_BROWSER = not Path(CHROMIUM).exists() and not os.environ.get("NORN_REQUIRE_BROWSER")
Headers = dict[str, str]
_EVENT = re.compile(r'<li data-type="([^"]+)" data-position="(\d+)">')


def _events(page: str) -> list[tuple[str, int]]:
    return [(kind, int(position)) for kind, position in _EVENT.findall(page)]


def _text(page: Any) -> str:
    return html.unescape(page.text)


async def _api_error(
    client: AsyncTestClient, headers: Headers, method: str, path: str, **kw: Any
) -> tuple[int, dict[str, Any]]:
    answer = await client.request(method, path, headers=headers, **kw)
    return answer.status_code, answer.json()["error"]


async def test_audit_page_filters_pages_and_keeps_tenants_apart(
    module_app: AsyncTestClient, module_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = module_app
    padmin = await platform_admin(client, module_settings)
    name = unique("uiaud")
    tenant_id, admin = await make_tenant_user(client, padmin, name, "admin")
    pipeline = await create_pipeline(client, admin, "audited-pipeline")
    _, other = await make_tenant_user(client, padmin, unique("uiaud-b"), "admin")
    theirs = await create_pipeline(client, other, "b-secret-pipeline")
    viewer = await _viewer(client, padmin, tenant_id)
    created = await read_at(
        client,
        admin,
        "/api/v1/events",
        theirs["position"],
        resources=f"pipeline:{pipeline['id']}",
    )
    event = created["items"][0]
    assert event["type"] == "norn.pipeline.created.v1"

    await _signed_in(client, f"{name}-admin".lower())
    shown = await client.get("/ui/audit", params={"min_position": theirs["position"]})
    assert shown.status_code == 200, shown.text
    assert 'href="/ui/audit" aria-current="page"' in shown.text  # the nav entry
    listed = _events(shown.text)
    assert ("norn.pipeline.created.v1", event["position"]) in listed
    assert [p for _, p in listed] == sorted((p for _, p in listed), reverse=True)  # newest first
    assert "<details>" in shown.text and "audited-pipeline" in shown.text  # the payload
    assert f'href="/ui/pipelines/{pipeline["id"]}"' in shown.text
    # Another tenant's events never appear, however asked for.
    assert "b-secret" not in shown.text and theirs["id"] not in shown.text
    asked = await client.get("/ui/audit", params={"resource_id": theirs["id"]})
    assert asked.status_code == 200 and _events(asked.text) == []
    assert "b-secret" not in asked.text

    # Each filter narrows as the API's: by resource (type and id, id alone, type alone),
    # actor, event type and time range.
    narrowed = {
        "resource": {"resource_type": "pipeline", "resource_id": pipeline["id"]},
        "id": {"resource_id": pipeline["id"]},
        "actor": {"actor": event["actor"], "types": "norn.pipeline.*"},
        "range": {"since": event["time"], "until": "2999-01-01T00:00:00Z", "resource_id": ""},
    }
    for label, params in narrowed.items():
        page = await client.get("/ui/audit", params=params)
        assert page.status_code == 200, (label, page.text)
        assert ("norn.pipeline.created.v1", event["position"]) in _events(page.text), label
    only_pipelines = _events((await client.get("/ui/audit?resource_type=pipeline")).text)
    assert only_pipelines and {kind for kind, _ in only_pipelines} == {"norn.pipeline.created.v1"}
    for label, params in {
        "other kind": {"resource_type": "job", "resource_id": pipeline["id"]},
        "kind alone": {"resource_type": "run"},
        "actor": {"actor": "user:nobody"},
        "types": {"types": "norn.run.*"},
        "range": {"until": event["time"]},  # exclusive
    }.items():
        page = await client.get("/ui/audit", params=params)
        assert page.status_code == 200 and ("norn.pipeline.created.v1", event["position"]) not in (
            _events(page.text)
        ), label

    # Paged by the API's cursor: one event a page, the next link carries the filters.
    first = await client.get("/ui/audit", params={"limit": "1", "order": "asc"})
    link = re.search(r'<a href="([^"]+)" rel="next">', first.text)
    assert link, first.text
    second = await client.get(html.unescape(link.group(1)))
    assert second.status_code == 200 and "First page" in second.text
    (one,), (two,) = _events(first.text), _events(second.text)
    assert one[1] < two[1]

    # A bad filter is the API's 400 and message, as a page.
    for params, api_params in (
        ({"since": "yesterday"}, {"since": "yesterday"}),
        ({"resource_type": "pipeline", "resource_id": "nope"}, {"resources": "pipeline:nope"}),
        ({"types": "norn.[z-a]"}, {"types": "norn.[z-a]"}),
        ({"limit": "0"}, {"limit": "0"}),
    ):
        status, error = await _api_error(client, admin, "GET", "/api/v1/events", params=api_params)
        page = await client.get("/ui/audit", params=params)
        assert (status, page.status_code) == (400, 400), (params, page.text)
        assert error["message"] in _text(page), (params, error, page.text)
    unknown = await client.get("/ui/audit", params={"resource_type": "planet"})
    assert unknown.status_code == 400 and "a resource is one of pipeline" in unknown.text

    # A viewer reads the events its role may read elsewhere: the pipeline's, not the
    # users' (the API's readable_event_kinds).
    await _signed_in(client, viewer)
    seen = await client.get("/ui/audit")
    assert seen.status_code == 200
    kinds = {kind for kind, _ in _events(seen.text)}
    assert "norn.pipeline.created.v1" in kinds and "norn.user.created.v1" not in kinds
    # A role without the audit permission (none of today's roles lacks it, so the table
    # is narrowed for this test): no nav entry, and the page is refused.
    monkeypatch.setitem(
        ROLE_PERMISSIONS, "viewer", ROLE_PERMISSIONS["viewer"] - {Permission.EVENTS_READ}
    )
    pipelines = await client.get("/ui/pipelines")
    assert pipelines.status_code == 200 and 'href="/ui/audit"' not in pipelines.text
    refused = await client.get("/ui/audit")
    assert refused.status_code == 403 and "may not events:read" in refused.text
    client.cookies.clear()


async def test_tenants_page_shows_usage_against_quotas(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    padmin = await platform_admin(client, module_settings)
    name = unique("uiuse")
    tenant_id, admin = await make_tenant_user(client, padmin, name, "admin")
    await create_pipeline(client, admin, "counted-one")
    second = await create_pipeline(client, admin, "counted-two")
    await read_at(client, admin, "/api/v1/pipelines", second["position"])
    usage = (await client.get(f"/api/v1/tenants/{tenant_id}/usage", headers=padmin)).json()
    assert usage["quotas"]["max_pipelines"] == {"limit": 25, "used": 2}

    client.cookies.clear()
    username, password = module_settings.admin_username, module_settings.admin_password
    assert (await sign_in(client, username or "", password or "")).status_code == 303
    shown = await client.get("/ui/tenants")
    assert shown.status_code == 200, shown.text
    card = shown.text.split(f'data-tenant="{tenant_id}"', 1)[1].split("</li>", 1)[0]
    for quota, numbers in usage["quotas"].items():
        cell = card.split(f'data-quota="{quota}"', 1)[1].split("</dd>", 1)[0]
        assert f'data-testid="used">{numbers["used"]}<' in cell, (quota, cell)
        assert f'data-testid="limit">{numbers["limit"]}<' in cell, (quota, cell)
        assert "<meter" in cell
    assert f'value="{tenant_id}"' in card  # the "act in this tenant" switch stays
    chosen = await client.post(
        "/ui/tenant",
        data={"tenant_id": tenant_id, "csrf_token": csrf_of(shown.text)},
        follow_redirects=False,
    )
    assert chosen.status_code == 303
    assert "counted-two" in (await client.get("/ui/pipelines")).text
    bad_cursor = await client.get("/ui/tenants", params={"cursor": "not-a-cursor"})
    assert bad_cursor.status_code == 400 and "invalid cursor" in bad_cursor.text

    # A tenant's own admin: no Tenants entry, and the page is refused.
    await _signed_in(client, f"{name}-admin".lower())
    pipelines = await client.get("/ui/pipelines")
    assert 'href="/ui/tenants"' not in pipelines.text
    refused = await client.get("/ui/tenants")
    assert refused.status_code == 403 and "may not tenants:manage" in refused.text
    assert name not in refused.text.replace(f"{name}-admin".lower(), "")
    client.cookies.clear()


async def test_backfill_from_the_job_page(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    padmin = await platform_admin(client, module_settings)
    name = unique("uifill")
    tenant_id, admin = await make_tenant_user(client, padmin, name, "admin")
    pipeline = await create_pipeline(client, admin, "backfilled")
    job = await _job(
        client, admin, "hourly", target={"pipeline_id": pipeline["id"]}, cron_expr="@hourly"
    )
    await read_at(client, admin, f"{JOBS}/{job['id']}", job["position"])
    path = f"/ui/jobs/{job['id']}"
    window = {"start": "2026-01-01T00:00:00Z", "end": "2026-01-01T02:00:00Z"}

    # A viewer is offered no backfill, and is refused one posted anyway.
    await _signed_in(client, await _viewer(client, padmin, tenant_id))
    shown = await client.get(path)
    assert shown.status_code == 200 and 'data-action="backfill"' not in shown.text
    assert "data-viewer-time" in shown.text and "/ui/static/local-time.js" in shown.text
    refused = await client.post(
        f"{path}/backfill", data={**window, "csrf_token": csrf_of(shown.text)}
    )
    assert refused.status_code == 403 and "may not jobs:write" in refused.text

    await _signed_in(client, f"{name}-admin".lower())
    shown = await client.get(path)
    assert 'data-action="backfill"' in shown.text
    csrf = csrf_of(shown.text)
    done = await client.post(f"{path}/backfill", data={**window, "csrf_token": csrf})
    assert done.status_code == 200, done.text
    assert 'data-testid="queued">3<' in done.text and 'data-testid="already">0<' in done.text
    position = re.search(r'data-position="(\d+)"', done.text)
    assert position, done.text
    runs = (await read_at(client, admin, "/api/v1/runs", int(position.group(1))))["items"]
    assert len(runs) == 3 and {r["pipeline_id"] for r in runs} == {pipeline["id"]}
    again = await client.post(f"{path}/backfill", data={**window, "csrf_token": csrf})
    assert 'data-testid="queued">0<' in again.text and 'data-testid="already">3<' in again.text
    listed = again.text.split('data-list="already"', 1)[1].split("</ul>", 1)[0]
    assert {f"/ui/runs/{r['id']}" for r in runs} == set(re.findall(r'href="([^"]+)"', listed))
    assert len((await client.get("/api/v1/runs", headers=admin)).json()["items"]) == 3

    # Bad input: the API's status and message (the same BackfillRequest and service).
    api_path = f"{JOBS}/{job['id']}/backfill"
    end = window["end"]
    for form, body in (
        ({"start": "yesterday", "end": end}, {"start": "yesterday", "end": end}),
        ({"end": end}, {"end": end}),
        ({"start": end, "end": window["start"]}, {"start": end, "end": window["start"]}),
        (
            {"start": "2026-01-01T00:00:00", "end": end},
            {"start": "2026-01-01T00:00:00", "end": end},
        ),
        ({**window, "max_runs": "2"}, {**window, "max_runs": 2}),
        ({**window, "max_runs": "many"}, {**window, "max_runs": "many"}),
    ):
        status, error = await _api_error(client, admin, "POST", api_path, json=body)
        page = await client.post(f"{path}/backfill", data={**form, "csrf_token": csrf})
        assert page.status_code == status and status in (400, 422), (form, status, page.text)
        assert error["message"] in _text(page), (form, error, page.text)
        for detail in error.get("details") or []:
            assert detail["message"] in _text(page), (form, detail, page.text)
    assert len((await client.get("/api/v1/runs", headers=admin)).json()["items"]) == 3

    # Another tenant's job: not found, nothing queued.
    b_name = unique("uifill-b")
    await make_tenant_user(client, padmin, b_name, "admin")
    await _signed_in(client, f"{b_name}-admin".lower())
    csrf = csrf_of((await client.get("/ui/jobs")).text)
    other = await client.post(f"{path}/backfill", data={**window, "csrf_token": csrf})
    assert other.status_code == 404 and "hourly" not in other.text
    assert len((await client.get("/api/v1/runs", headers=admin)).json()["items"]) == 3
    client.cookies.clear()


@pytest.mark.skipif(NO_BROWSER, reason=f"{CHROMIUM} is not installed (CI installs it)")
async def test_in_a_browser_local_times_and_narrow_screens(
    settings: Settings, tmp_path: Path
) -> None:
    """Headless Chromium in New York: the next fires show the job's zone (India) and the
    viewer's own (filled in by local-time.js), and the new pages have no sideways
    scrolling at 375 px or 1280 px (screenshots kept with the browser suite's)."""
    from playwright.async_api import async_playwright

    from tests.e2e.ui_browser_support import CHROMIUM_ARGS, shoot
    from tests.e2e.ui_browser_support import sign_in as browser_sign_in

    async with serving_app(settings) as api:
        base = str(api.base_url).rstrip("/")
        padmin = await platform_admin(api, settings)
        _, admin = await make_tenant_user(api, padmin, "zones", "admin")
        pipeline = await create_pipeline(api, admin, "zoned")
        target = {"pipeline_id": pipeline["id"]}
        made = await api.post(
            JOBS,
            json={
                "name": "kolkata",
                "target": target,
                "cron_expr": "0 3 * * *",
                "timezone": "Asia/Kolkata",
            },
            headers=admin,
        )
        assert made.status_code == 201, made.text
        job = made.json()
        await read_at(api, admin, f"{JOBS}/{job['id']}", job["position"])
        async with async_playwright() as playwright:
            context = await playwright.chromium.launch_persistent_context(
                str(tmp_path / "profile"),
                executable_path=CHROMIUM,
                args=CHROMIUM_ARGS,
                headless=True,
                viewport={"width": 1280, "height": 900},
                timezone_id="America/New_York",
            )
            try:
                page = await context.new_page()
                await browser_sign_in(page, base, "zones-admin")
                await page.goto(f"{base}/ui/jobs/{job['id']}")
                await page.wait_for_selector("time[data-viewer-time][data-filled]")
                job_times = await page.locator("time.tz-job").all_inner_texts()
                viewer_times = await page.locator("time.tz-viewer").all_inner_texts()
                assert len(job_times) == len(viewer_times) == 10
                assert all(t.endswith("03:00 IST") for t in job_times), job_times
                # 03:00 in Kolkata is 21:30 UTC: 16:30 in New York (17:30 in summer).
                assert all(re.search(r"1[67]:30", t) for t in viewer_times), viewer_times
                assert not any("UTC" in t for t in viewer_times), viewer_times
                legend = await page.locator(".fires-legend").inner_text()
                assert "your time (America/New_York)" in legend, legend
                await shoot(page, "job-backfill")
                await page.goto(f"{base}/ui/jobs")
                await shoot(page, "jobs-timeline")
                await page.goto(f"{base}/ui/audit")
                await page.locator("details summary").first.click()
                await shoot(page, "audit")
                await page.get_by_role("button", name="Sign out").click()
                await browser_sign_in(
                    page, base, settings.admin_username or "", settings.admin_password or ""
                )
                await page.goto(f"{base}/ui/tenants")
                assert await page.locator("meter").count() >= 5
                await shoot(page, "tenants-usage")
            finally:
                await context.close()
