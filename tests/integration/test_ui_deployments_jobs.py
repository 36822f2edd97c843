"""The dashboard's deployments and schedules pages (/ui/deployments, /ui/jobs) over the
real app, PostgreSQL and NATS: what each lists, what a viewer is offered (nothing to
write, and a POST refused), an admin's roll back, enable, disable and trigger (their
effect read back through the API), and another tenant's deployments and jobs as 404."""

from __future__ import annotations

import re
from typing import Any

from litestar.testing import AsyncTestClient
from psycopg import AsyncConnection

from infrastructure.settings import Settings
from tests.integration.api_client import create_pipeline, make_tenant_user, platform_admin, unique
from tests.integration.deployment_client import BASE, deploy, read_at, revise
from tests.integration.test_ui import PASSWORD, csrf_of, sign_in

JOBS = "/api/v1/scheduler/jobs"
Headers = dict[str, str]


async def _viewer(client: AsyncTestClient, admin: Headers, tenant_id: str) -> str:
    username = unique("viewer")
    made = await client.post(
        "/api/v1/users",
        json={
            "username": username,
            "password": PASSWORD,
            "tenant_id": tenant_id,
            "roles": ["viewer"],
        },
        headers=admin,
    )
    assert made.status_code == 201, made.text
    return username


async def _signed_in(client: AsyncTestClient, username: str) -> None:
    client.cookies.clear()
    signed = await sign_in(client, username)
    assert signed.status_code == 303, signed.text


async def _job(client: AsyncTestClient, headers: Headers, name: str, **body: Any) -> Any:
    made = await client.post(JOBS, json={"name": name, **body}, headers=headers)
    assert made.status_code == 201, made.text
    return made.json()


async def test_deployments_page_lists_releases_and_rolls_back(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    padmin = await platform_admin(client, module_settings)
    name = unique("uidep")
    tenant_id, admin = await make_tenant_user(client, padmin, name, "admin")
    pipeline = await create_pipeline(client, admin, "ui-deployed")
    staging = await deploy(client, admin, pipeline["id"], "staging")
    production = await deploy(client, admin, pipeline["id"], "production")
    await revise(client, admin, pipeline)
    path = f"{BASE}/{staging['id']}"
    released = await client.post(f"{path}/releases", json={"revision": 2}, headers=admin)
    assert released.status_code == 201, released.text
    # No executor in this app: the verification run stays queued, the release verifying.
    green = {"type": "blue-green", "verification_timeout": 3600}
    verifying = await client.post(
        f"{BASE}/{production['id']}/releases", json={"strategy": green}, headers=admin
    )
    assert verifying.status_code == 202, verifying.text
    await read_at(client, admin, f"{BASE}/{production['id']}", verifying.json()["position"])
    await read_at(client, admin, path, released.json()["position"])

    # A viewer sees every environment, the active and verifying releases; no buttons.
    await _signed_in(client, await _viewer(client, padmin, tenant_id))
    listing = await client.get("/ui/deployments")
    assert listing.status_code == 200, listing.text
    assert ">staging</h2>" in listing.text and ">production</h2>" in listing.text
    assert "ui-deployed" in listing.text and "#2 (revision 2)" in listing.text
    assert re.search(r"5\d min \d+ s left", listing.text), listing.text  # the countdown
    shown = await client.get(f"/ui/deployments/{staging['id']}")
    assert shown.status_code == 200, shown.text
    assert 'data-outcome="superseded"' in shown.text and 'data-outcome="active"' in shown.text
    assert "data-action=" not in shown.text
    refused = await client.post(
        f"/ui/deployments/{staging['id']}/rollback",
        data={"csrf_token": csrf_of(shown.text)},
        follow_redirects=False,
    )
    assert refused.status_code == 403 and "may not deployments:write" in refused.text
    verifying_page = await client.get(f"/ui/deployments/{production['id']}")
    assert "Verifying release #2" in verifying_page.text
    assert 'data-testid="countdown"' in verifying_page.text

    # The admin may roll back: offered, and done through DeploymentService.roll_back.
    await _signed_in(client, f"{name}-admin".lower())
    shown = await client.get(f"/ui/deployments/{staging['id']}")
    assert 'data-action="rollback"' in shown.text
    no_token = await client.post(f"/ui/deployments/{staging['id']}/rollback")
    assert no_token.status_code == 403
    rolled = await client.post(
        f"/ui/deployments/{staging['id']}/rollback",
        data={"csrf_token": csrf_of(shown.text), "to_release": ""},
        follow_redirects=False,
    )
    assert rolled.status_code == 303, rolled.text
    assert rolled.headers["location"].startswith(f"/ui/deployments/{staging['id']}?min_position=")
    after = await client.get(rolled.headers["location"])
    assert 'data-testid="active-release">#3<' in after.text
    assert "roll back to #1" in after.text
    status = (await client.get(f"{path}/status", headers=admin)).json()
    assert (status["active_release"], status["active_revision"]) == (3, 1)
    # A verifying deployment offers no roll back (the domain would refuse it).
    assert (
        'data-action="rollback"'
        not in (await client.get(f"/ui/deployments/{production['id']}")).text
    )
    # The domain's refusals are pages with the API's status and message.
    again = await client.post(
        f"/ui/deployments/{staging['id']}/rollback",
        data={"csrf_token": csrf_of(shown.text)},
        follow_redirects=False,
    )
    assert again.status_code == 409 and "no earlier release to roll back to" in again.text
    bad = await client.post(
        f"/ui/deployments/{staging['id']}/rollback",
        data={"csrf_token": csrf_of(shown.text), "to_release": "two"},
        follow_redirects=False,
    )
    assert bad.status_code == 422 and "to_release must be a release number" in bad.text
    client.cookies.clear()


async def test_schedules_page_shows_fires_counters_and_toggles(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    padmin = await platform_admin(client, module_settings)
    name = unique("uijob")
    tenant_id, admin = await make_tenant_user(client, padmin, name, "admin")
    pipeline = await create_pipeline(client, admin, "ui-scheduled")
    target = {"pipeline_id": pipeline["id"]}
    # Asia/Kolkata has no summer time: 03:00 there is 21:30 UTC the day before, always.
    nightly = await _job(
        client, admin, "nightly", target=target, cron_expr="0 3 * * *", timezone="Asia/Kolkata"
    )
    hourly = await _job(client, admin, "hourly", target=target, cron_expr="@hourly", enabled=False)
    await read_at(client, admin, f"{JOBS}/{hourly['id']}", hourly["position"])
    async with await AsyncConnection.connect(module_settings.database_url or "") as conn:
        await conn.execute(
            "INSERT INTO job_schedules (job_id, tenant_id, spec_version, cursor, skipped, missed)"
            " VALUES (%s, %s, 1, now(), 4, 7)",
            (nightly["id"], tenant_id),
        )

    await _signed_in(client, await _viewer(client, padmin, tenant_id))
    listing = await client.get("/ui/jobs")
    assert listing.status_code == 200, listing.text
    assert "nightly" in listing.text and "hourly" in listing.text
    assert "03:00 IST" in listing.text and "21:30 UTC" in listing.text
    assert 'data-testid="skipped">4<' in listing.text and 'data-testid="missed">7<' in listing.text
    assert "none while disabled" in listing.text
    assert "data-action=" not in listing.text
    csrf = csrf_of(listing.text)
    for action in ("enable", "disable", "trigger"):
        refused = await client.post(
            f"/ui/jobs/{nightly['id']}/{action}", data={"csrf_token": csrf}, follow_redirects=False
        )
        assert refused.status_code == 403, (action, refused.text)
        assert "may not jobs:toggle" in refused.text
    page = await client.get(f"/ui/jobs/{nightly['id']}")
    assert page.status_code == 200 and page.text.count(" IST</time>") == 10

    await _signed_in(client, f"{name}-admin".lower())
    listing = await client.get("/ui/jobs")
    assert f'action="/ui/jobs/{nightly["id"]}/disable"' in listing.text
    assert f'action="/ui/jobs/{hourly["id"]}/enable"' in listing.text
    csrf = csrf_of(listing.text)
    for job, action, enabled in ((nightly, "disable", False), (hourly, "enable", True)):
        done = await client.post(
            f"/ui/jobs/{job['id']}/{action}", data={"csrf_token": csrf}, follow_redirects=False
        )
        assert done.status_code == 303, done.text
        shown = await client.get(done.headers["location"])
        assert f'data-testid="job-state">{"enabled" if enabled else "disabled"}<' in shown.text
        read = await client.get(f"{JOBS}/{job['id']}", headers=admin)
        assert read.json()["enabled"] is enabled
    triggered = await client.post(
        f"/ui/jobs/{nightly['id']}/trigger", data={"csrf_token": csrf}, follow_redirects=False
    )
    assert triggered.status_code == 303, triggered.text
    assert triggered.headers["location"].startswith("/ui/runs/")
    run_page = await client.get(triggered.headers["location"])
    assert run_page.status_code == 200 and "ui-scheduled" in run_page.text
    runs = (await client.get("/api/v1/runs", headers=admin)).json()["items"]
    assert [r["pipeline_id"] for r in runs] == [pipeline["id"]]
    client.cookies.clear()


async def test_another_tenants_deployments_and_jobs_are_not_found(
    module_app: AsyncTestClient, module_settings: Settings
) -> None:
    client = module_app
    padmin = await platform_admin(client, module_settings)
    _, admin_a = await make_tenant_user(client, padmin, unique("uiso-a"), "admin")
    pipeline = await create_pipeline(client, admin_a, "a-secret-deploy")
    deployment = await deploy(client, admin_a, pipeline["id"], "a-secret-env")
    await revise(client, admin_a, pipeline)
    released = await client.post(
        f"{BASE}/{deployment['id']}/releases", json={"revision": 2}, headers=admin_a
    )
    assert released.status_code == 201, released.text
    job = await _job(
        client, admin_a, "a-secret-job", target={"pipeline_id": pipeline["id"]}, cron_expr="@daily"
    )
    await read_at(client, admin_a, f"{JOBS}/{job['id']}", job["position"])
    await read_at(client, admin_a, f"{BASE}/{deployment['id']}", released.json()["position"])

    b_name = unique("uiso-b")
    await make_tenant_user(client, padmin, b_name, "admin")
    await _signed_in(client, f"{b_name}-admin".lower())
    csrf = csrf_of((await client.get("/ui/jobs")).text)
    for method, path in (
        ("GET", f"/ui/deployments/{deployment['id']}"),
        ("POST", f"/ui/deployments/{deployment['id']}/rollback"),
        ("GET", f"/ui/jobs/{job['id']}"),
        ("POST", f"/ui/jobs/{job['id']}/enable"),
        ("POST", f"/ui/jobs/{job['id']}/disable"),
        ("POST", f"/ui/jobs/{job['id']}/trigger"),
    ):
        data = {"csrf_token": csrf} if method == "POST" else None
        answer = await client.request(method, path, data=data, follow_redirects=False)
        assert answer.status_code == 404, (method, path, answer.status_code, answer.text)
        assert "a-secret" not in answer.text
    for listing in ("/ui/deployments", "/ui/jobs"):
        shown = await client.get(listing)
        assert shown.status_code == 200
        assert "a-secret" not in shown.text and deployment["id"] not in shown.text
    client.cookies.clear()

    # Nothing was done to A's: the same active release, the job still enabled, no run.
    status = (await client.get(f"{BASE}/{deployment['id']}/status", headers=admin_a)).json()
    assert status["active_release"] == 2 and len(status["recent_releases"]) == 2
    assert (await client.get(f"{JOBS}/{job['id']}", headers=admin_a)).json()["enabled"] is True
    assert (await client.get("/api/v1/runs", headers=admin_a)).json()["items"] == []
