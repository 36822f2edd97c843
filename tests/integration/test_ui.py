"""The dashboard (/ui) over the real app, PostgreSQL and NATS: sign-in with the API's
users and throttle, the cookie session and its CSRF token, what a role is offered, and
tenant isolation through the pages."""

from __future__ import annotations

import re
from typing import Any

from litestar.testing import AsyncTestClient

from infrastructure.settings import Settings
from tests.integration.api_client import (
    create_pipeline,
    make_tenant_user,
    platform_admin,
    running_app,
    visible,
)

PASSWORD = "correct-horse-battery-staple"  # make_tenant_user's
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, html[:2000]
    return found.group(1)


async def sign_in(client: AsyncTestClient, username: str, password: str = PASSWORD) -> Any:
    form = await client.get("/ui/login")
    assert form.status_code == 200, form.text
    return await client.post(
        "/ui/login",
        data={"username": username, "password": password, "csrf_token": csrf_of(form.text)},
        follow_redirects=False,
    )


async def test_sign_in_cookie_csrf_and_sign_out(settings: Settings) -> None:
    async with running_app(settings) as client:
        admin = await platform_admin(client, settings)
        _, editor = await make_tenant_user(client, admin, "ui-tenant", "editor")
        pipeline = await create_pipeline(client, editor, "ui-pipeline")
        await visible(client, editor, f"/api/v1/pipelines/{pipeline['id']}", pipeline["position"])

        # Not signed in: pages send the browser to the sign-in form.
        page = await client.get("/ui/pipelines", follow_redirects=False)
        assert page.status_code == 303
        # No other site may frame any answer of the dashboard (clickjacking).
        for answer in (page, await client.get("/ui/login"), await client.get("/ui/static/ui.css")):
            assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
            assert answer.headers["x-frame-options"] == "DENY"
            assert answer.headers["x-content-type-options"] == "nosniff"
        # Pages stay out of caches and history (a page holds its CSRF token); files not.
        assert (await client.get("/ui/login")).headers["cache-control"] == "no-store"
        assert "no-store" not in (await client.get("/ui/static/ui.css")).headers.get(
            "cache-control", ""
        )
        assert page.headers["location"].startswith("/ui/login?next=/ui/pipelines")

        # The login form's CSRF token is required (double submit), even with a good password.
        await client.get("/ui/login")
        refused = await client.post(
            "/ui/login",
            data={"username": "ui-tenant-editor", "password": PASSWORD},
            follow_redirects=False,
        )
        assert refused.status_code == 403
        assert "CSRF" in refused.text

        # The API's login message for a wrong password, on the form.
        wrong = await sign_in(client, "ui-tenant-editor", "not-the-password")
        assert wrong.status_code == 401
        assert "invalid username or password" in wrong.text
        assert "norn_session" not in client.cookies

        signed = await sign_in(client, "ui-tenant-editor")
        assert signed.status_code == 303, signed.text
        assert signed.headers["location"] == "/ui/pipelines"
        set_cookie = ";".join(signed.headers.get_list("set-cookie"))
        assert "norn_session=" in set_cookie and "httponly" in set_cookie.lower()
        assert "samesite=lax" in set_cookie.lower()
        assert "Secure" not in set_cookie  # plain HTTP here; HTTPS adds it

        # The dashboard's home (no trailing slash) is a page, not an API route.
        home = await client.get("/ui", follow_redirects=False)
        assert home.status_code == 303 and home.headers["location"] == "/ui/pipelines"
        listing = await client.get("/ui/pipelines")
        assert listing.status_code == 200
        assert "ui-pipeline" in listing.text
        searched = await client.get("/ui/pipelines", params={"name": "nothing-like-it"})
        assert "ui-pipeline" not in searched.text
        shown = await client.get(f"/ui/pipelines/{pipeline['id']}")
        assert shown.status_code == 200
        assert 'data-step="paid"' in shown.text and "runs after read" in shown.text
        assert 'data-action="run"' in shown.text  # an editor may run it
        csrf = csrf_of(shown.text)

        # A state-changing UI request without the token: 403, nothing queued.
        no_token = await client.post(
            f"/ui/pipelines/{pipeline['id']}/run", data={"params": "{}"}, follow_redirects=False
        )
        assert no_token.status_code == 403
        bad_json = await client.post(
            f"/ui/pipelines/{pipeline['id']}/run",
            data={"params": "{not json", "csrf_token": csrf},
            follow_redirects=False,
        )
        # A form that was read but has a bad field: 422, as the API and the deployment
        # page's Run form answer it.
        assert bad_json.status_code == 422
        assert "params: not JSON" in bad_json.text
        runs = await client.get("/api/v1/runs", headers=editor)
        assert runs.json()["items"] == []

        # /api/v1 takes the cookie only with the CSRF header.
        without = await client.get("/api/v1/pipelines")
        assert without.status_code == 403, without.text
        assert without.json()["error"]["code"] == "PERMISSION_DENIED"
        wrong_header = await client.get("/api/v1/pipelines", headers={"X-CSRF-Token": "x" * 64})
        assert wrong_header.status_code == 403
        with_header = await client.get("/api/v1/pipelines", headers={"X-CSRF-Token": csrf})
        assert with_header.status_code == 200
        assert [p["name"] for p in with_header.json()["items"]] == ["ui-pipeline"]
        # ... and counts it like any request of the user (rate-limit headers).
        assert "x-ratelimit-remaining" in with_header.headers

        # Static assets: public, not rate limited.
        asset = await client.get("/ui/static/htmx.min.js")
        assert asset.status_code == 200 and "htmx" in asset.text
        assert "x-ratelimit-remaining" not in asset.headers

        # Sign out: the session ends (the API's logout), the cookie no longer works.
        old_cookie = client.cookies["norn_session"]
        out = await client.post("/ui/logout", data={"csrf_token": csrf}, follow_redirects=False)
        assert out.status_code == 303 and out.headers["location"] == "/ui/login"
        client.cookies.set("norn_session", old_cookie)
        after = await client.get("/ui/pipelines", follow_redirects=False)
        assert after.status_code == 303 and after.headers["location"].startswith("/ui/login")
        api_after = await client.get("/api/v1/pipelines", headers={"X-CSRF-Token": csrf})
        assert api_after.status_code == 401


async def test_viewer_is_offered_no_writes_and_tenants_stay_apart(settings: Settings) -> None:
    async with running_app(settings) as client:
        admin = await platform_admin(client, settings)
        tenant_a, editor_a = await make_tenant_user(client, admin, "ui-a", "editor")
        theirs = await create_pipeline(client, editor_a, "a-only-pipeline")
        await visible(client, editor_a, f"/api/v1/pipelines/{theirs['id']}", theirs["position"])
        await client.post(
            "/api/v1/users",
            json={
                "username": "ui-a-viewer",
                "password": PASSWORD,
                "tenant_id": tenant_a,
                "roles": ["viewer"],
            },
            headers=admin,
        )
        assert (await sign_in(client, "ui-a-viewer")).status_code == 303
        shown = await client.get(f"/ui/pipelines/{theirs['id']}")
        assert shown.status_code == 200, shown.text
        assert "a-only-pipeline" in shown.text
        assert "data-action=" not in shown.text and "<textarea" not in shown.text
        csrf = csrf_of(shown.text)  # the sign-out form's: the only form a viewer gets
        refused = await client.post(
            f"/ui/pipelines/{theirs['id']}/run",
            data={"params": "{}", "csrf_token": csrf},
            follow_redirects=False,
        )
        assert refused.status_code == 403
        assert "may not runs:trigger" in refused.text
        client.cookies.clear()

        # Another tenant's user: A's pipeline is not found, as on the API.
        await make_tenant_user(client, admin, "ui-b", "admin")
        assert (await sign_in(client, "ui-b-admin")).status_code == 303
        other = await client.get(f"/ui/pipelines/{theirs['id']}")
        assert other.status_code == 404
        assert "a-only-pipeline" not in other.text
        listing = await client.get("/ui/pipelines")
        assert "a-only-pipeline" not in listing.text
        malformed = await client.get("/ui/pipelines/not-a-uuid")
        assert malformed.status_code == 400
        client.cookies.clear()

        # A platform admin sees A's pipeline once acting in A (the X-Tenant-ID of pages).
        assert (
            await sign_in(client, settings.admin_username or "", settings.admin_password or "")
        ).status_code == 303
        tenants = await client.get("/ui/tenants")
        assert tenants.status_code == 200 and "ui-a" in tenants.text
        chosen = await client.post(
            "/ui/tenant",
            data={"tenant_id": tenant_a, "csrf_token": csrf_of(tenants.text)},
            follow_redirects=False,
        )
        assert chosen.status_code == 303
        acting = await client.get("/ui/pipelines")
        assert "a-only-pipeline" in acting.text
        assert f"in tenant {tenant_a}" in acting.text


async def test_every_ui_route_keeps_another_tenants_runs_and_pipelines_out(
    settings: Settings,
) -> None:
    """The isolation matrix of the pages: B's admin, signed in, gets 404 for each page
    and action on A's pipeline and run (nothing of A's in the answer, nothing done),
    and lists hold none of A's."""
    async with running_app(settings) as client:
        admin = await platform_admin(client, settings)
        _, editor_a = await make_tenant_user(client, admin, "iso-a", "editor")
        pipeline = await create_pipeline(client, editor_a, "a-secret-plans")
        queued = await client.post(
            f"/api/v1/pipelines/{pipeline['id']}/runs", json={"params": {}}, headers=editor_a
        )
        assert queued.status_code == 202, queued.text
        run_id = queued.json()["run_id"]
        await visible(client, editor_a, f"/api/v1/runs/{run_id}", queued.json()["position"])

        await make_tenant_user(client, admin, "iso-b", "admin")
        assert (await sign_in(client, "iso-b-admin")).status_code == 303
        csrf = csrf_of((await client.get("/ui/pipelines")).text)
        for method, path in (
            ("GET", f"/ui/pipelines/{pipeline['id']}"),
            ("POST", f"/ui/pipelines/{pipeline['id']}/run"),
            ("GET", f"/ui/runs/{run_id}"),
            ("GET", f"/ui/runs/{run_id}/live"),
            ("POST", f"/ui/runs/{run_id}/cancel"),
            ("POST", f"/ui/runs/{run_id}/retry"),
        ):
            data = {"params": "{}", "csrf_token": csrf} if method == "POST" else None
            answer = await client.request(method, path, data=data, follow_redirects=False)
            assert answer.status_code == 404, (method, path, answer.status_code, answer.text)
            assert "a-secret-plans" not in answer.text
        for listing in ("/ui/runs", "/ui/pipelines"):
            shown = await client.get(listing)
            assert shown.status_code == 200
            assert run_id not in shown.text and "a-secret-plans" not in shown.text
        client.cookies.clear()

        # Nothing was done to A's run by B's attempts: still queued, once.
        run = (await client.get(f"/api/v1/runs/{run_id}", headers=editor_a)).json()
        assert run["status"] == "queued" and not run.get("cancel_requested")
        runs = (await client.get("/api/v1/runs", headers=editor_a)).json()["items"]
        assert [r["id"] for r in runs] == [run_id]


async def test_a_platform_admin_creates_a_tenant_and_acts_in_it(settings: Settings) -> None:
    """A fresh install has no tenant: the dashboard says so, and its Tenants page creates
    one (POST /api/v1/tenants's schema and messages) and acts in it at once."""
    async with running_app(settings) as client:
        await platform_admin(client, settings)
        signed = await sign_in(client, settings.admin_username or "", settings.admin_password or "")
        assert signed.status_code == 303, signed.text
        listing = await client.get("/ui/pipelines")
        assert 'data-testid="no-tenant"' in listing.text
        shown = await client.get("/ui/tenants")
        csrf = csrf_of(shown.text)
        assert 'action="/ui/tenants"' in shown.text

        refused = await client.post(
            "/ui/tenants", data={"name": "x", "plan": "gold", "csrf_token": csrf}
        )
        assert refused.status_code == 422 and "plan" in refused.text, refused.text[:2000]
        made = await client.post(
            "/ui/tenants",
            data={"name": "acme", "plan": "pro", "description": "", "csrf_token": csrf},
            follow_redirects=False,
        )
        assert made.status_code == 303, made.text
        assert made.headers["location"].startswith("/ui/tenants?min_position=")
        tenant_id = client.cookies["norn_tenant"]
        after = await client.get(made.headers["location"])
        assert "acme" in after.text and "acting here" in after.text
        # Acting in it: the notice is gone and a pipeline is created in that tenant.
        listing = await client.get("/ui/pipelines")
        assert 'data-testid="no-tenant"' not in listing.text
        assert f"in tenant {tenant_id}" in listing.text
        taken = await client.post(
            "/ui/tenants",
            data={"name": "acme", "plan": "free", "csrf_token": csrf},
            follow_redirects=False,
        )
        assert taken.status_code == 409, taken.text[:2000]

        # A tenant's own admin may not create tenants: not offered, refused.
        admin = await platform_admin(client, settings)
        client.cookies.clear()
        await make_tenant_user(client, admin, "ui-other", "admin")
        assert (await sign_in(client, "ui-other-admin")).status_code == 303
        assert 'action="/ui/tenants"' not in (await client.get("/ui/pipelines")).text
        csrf = csrf_of((await client.get("/ui/pipelines")).text)
        forbidden = await client.post(
            "/ui/tenants", data={"name": "mine", "csrf_token": csrf}, follow_redirects=False
        )
        assert forbidden.status_code == 403
        client.cookies.clear()
