"""Tenant isolation of the dashboard, generated over the route table like the API's
(tests/integration/test_api_isolation_matrix.py): a new /ui route cannot skip it.

Tenant B's admin, signed in with a cookie session, asks every /ui route with a path
parameter for tenant A's resource and for one that does not exist: both answers must be
the same refusal (a GET: 404), neither may show anything of A's, and A's resources are
unchanged afterwards. Every page without a parameter shows B nothing of A's. A path
parameter this test does not know fails it, so whoever adds a page says what it reads."""

from __future__ import annotations

from typing import Any

from litestar import Litestar
from litestar.routes import HTTPRoute

from infrastructure.settings import Settings
from tests.integration.api_client import login, make_tenant_user, running_app
from tests.integration.run_support import EXECUTING, executing
from tests.integration.test_api_isolation_matrix import (
    _PARAM,
    fill,
    random_value,
    seed_tenant_a,
    snapshot,
)
from tests.integration.test_ui import csrf_of, sign_in

# Form fields per action, so that a post reaches the ownership check instead of stopping
# at the form's own validation (which would prove nothing). Keyed by (method, path).
FORMS: dict[tuple[str, str], dict[str, str]] = {
    ("POST", "/ui/pipelines/{pipeline_id:uuid}/run"): {"params": "{}"},
    ("POST", "/ui/pipelines/{pipeline_id:uuid}/rollback"): {"revision": "1"},
    ("POST", "/ui/pipelines/{pipeline_id:uuid}/clone"): {"name": "stolen"},
    ("POST", "/ui/pipelines/{pipeline_id:uuid}/deploy"): {"environment": "a-production"},
    ("POST", "/ui/jobs/{job_id:uuid}/backfill"): {
        "start": "2026-01-01T00:00:00Z",
        "end": "2026-01-01T02:00:00Z",
    },
}
# Not pages about a tenant's resources: the static files, signing in and out, and the
# platform admin's choice of tenant (tests/integration/test_ui.py).
SKIPPED = {"/ui/login", "/ui/logout", "/ui/tenant"}

# A platform admin's pages: a tenant's admin is refused them outright.
PLATFORM_ONLY = {"/ui/tenants"}


def ui_routes(app: Litestar, with_params: bool) -> list[tuple[str, str]]:
    found = []
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or not route.path.startswith("/ui"):
            continue
        if route.path in SKIPPED or route.path.startswith("/ui/static"):
            continue
        if bool(_PARAM.search(route.path)) != with_params:
            continue
        found.extend((method, route.path) for method in sorted(route.methods - {"HEAD", "OPTIONS"}))
    return found


def _leaks(text: str, ids: set[str], asked: str) -> set[str]:
    """A's ids in an answer, but for those the request itself named (a 404 may echo them)."""
    return {ident for ident in ids if ident in text and ident not in asked}


async def test_another_tenants_pages_and_actions_are_indistinguishable_from_missing_ones(
    settings: Settings,
) -> None:
    settings = executing(settings)
    async with running_app(settings, roles=EXECUTING) as client:
        root = await login(client, settings.admin_username or "", settings.admin_password or "")
        a = await seed_tenant_a(client, root)
        await make_tenant_user(client, root, "tenant-b", "admin")
        before = await snapshot(client, root, a)
        routes = ui_routes(client.app, with_params=True)
        covered = {path for _, path in routes}
        assert "/ui/pipelines/{pipeline_id:uuid}" in covered and "/ui/runs/{run_id:uuid}" in covered

        assert (await sign_in(client, "tenant-b-admin")).status_code == 303
        csrf = csrf_of((await client.get("/ui/pipelines")).text)

        def a_value(name: str, kind: str) -> str:
            assert name in a.values, f"UI isolation matrix: which of A's resources is {{{name}}}?"
            return a.values[name]

        problems = []
        for method, path in routes:
            data: dict[str, Any] | None = None
            if method != "GET":
                data = {"csrf_token": csrf, **FORMS.get((method, path), {})}
            theirs_path = fill(path, a_value)
            theirs = await client.request(method, theirs_path, data=data, follow_redirects=False)
            missing = await client.request(
                method, fill(path, random_value), data=data, follow_redirects=False
            )
            if theirs.status_code != missing.status_code or theirs.status_code < 400:
                problems.append(
                    f"{method} {path}: A's id {theirs.status_code}, "
                    f"a missing id {missing.status_code}"
                )
            elif missing.status_code in (400, 422):
                problems.append(f"{method} {path}: refused as invalid; add its fields to FORMS")
            elif method == "GET" and theirs.status_code != 404:
                problems.append(f"GET {path}: {theirs.status_code}, expected 404")
            if leaked := _leaks(theirs.text, a.ids, theirs_path):
                problems.append(f"{method} {path} shows A's {leaked}")

        for method, path in ui_routes(client.app, with_params=False):
            if method != "GET" or path.endswith("/live"):  # streams: never end, tested apart
                continue
            shown = await client.get(path)  # /ui itself sends the browser on to a list
            if path in PLATFORM_ONLY and shown.status_code == 403:
                continue  # B, a tenant's admin, sees nothing of it at all
            if shown.status_code != 200:
                problems.append(f"GET {path}: {shown.status_code}")
            elif leaked := _leaks(shown.text, a.ids, path):
                problems.append(f"GET {path} shows A's {leaked}")
        assert not problems, "\n".join(problems)

        client.cookies.clear()
        assert await snapshot(client, root, a) == before
