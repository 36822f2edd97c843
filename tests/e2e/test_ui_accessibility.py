"""Every dashboard page a tenant admin and a platform admin can reach, checked in a real
browser (tests/e2e/ui_crawl.py): axe-core's WCAG 2.1 A/AA rules with no serious or
critical violation, no sideways scrolling at 375 px and 1280 px, every visible link,
button and field reached by Tab, every field named. The pages are found by crawling from
/ui/pipelines, so pages added later are checked too; there is data on each (a pipeline
with two revisions, a succeeded and a failed run, a deployment with two releases, an
enabled and a disabled job). Screenshots of each page at both widths are kept under
.artifacts/ui-screenshots/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from infrastructure.settings import Settings
from tests.e2e.ui_browser_support import ARTIFACTS, browser, sign_in, skip_without_browser
from tests.e2e.ui_crawl import Crawl
from tests.integration.api_client import make_tenant_user, platform_admin, serving_app
from tests.integration.deployment_client import BASE, deploy, read_at
from tests.integration.run_support import (
    EXECUTING,
    executing,
    finished,
    make_pipeline,
    step,
    trigger,
)

skip_without_browser()

JOBS = "/api/v1/scheduler/jobs"
MISSING = "00000000-0000-4000-8000-00000000dead"
Headers = dict[str, str]


async def _data(api: Any, admin: Headers) -> tuple[str, str]:
    """Something on every page; the succeeded run's id and its pipeline's (two revisions)."""
    steps = [step("extract", "Test.emit", log_lines=3), step("load", "Test.emit", "extract")]
    pipeline_id = await make_pipeline(api, admin, "orders", steps)
    revised = await api.put(
        f"/api/v1/pipelines/{pipeline_id}",
        json={"name": "orders", "steps": steps, "description": "revision 2", "tags": ["daily"]},
        headers=admin,
    )
    assert revised.status_code == 200 and revised.json()["revision"] == 2, revised.text
    broken = await make_pipeline(api, admin, "broken", [step("only", "Test.fail")])
    runs = [await trigger(api, admin, pipeline_id), await trigger(api, admin, broken)]
    assert [(await finished(api, admin, run))["status"] for run in runs] == [
        "succeeded",
        "failed",
    ]
    staging = await deploy(api, admin, pipeline_id, "staging")
    released = await api.post(
        f"{BASE}/{staging['id']}/releases", json={"revision": 1}, headers=admin
    )
    assert released.status_code == 201, released.text
    await read_at(api, admin, f"{BASE}/{staging['id']}", released.json()["position"])
    target = {"pipeline_id": pipeline_id}
    for name, enabled in (("nightly", True), ("hourly", False)):
        job = await api.post(
            JOBS,
            json={"name": name, "target": target, "cron_expr": "0 3 * * *", "enabled": enabled},
            headers=admin,
        )
        assert job.status_code == 201, job.text
        await read_at(api, admin, f"{JOBS}/{job.json()['id']}", job.json()["position"])
    return runs[0], pipeline_id


async def test_every_page_is_accessible(settings: Settings, tmp_path: Path) -> None:
    settings = executing(settings)
    async with serving_app(settings, roles=EXECUTING) as api:
        base = str(api.base_url).rstrip("/")
        padmin = await platform_admin(api, settings)
        _, admin = await make_tenant_user(api, padmin, "a11y", "admin")
        run_id, pipeline_id = await _data(api, admin)
        crawl = Crawl(base)
        async with browser(tmp_path) as context:
            page = await context.new_page()
            # Before signing in: the sign-in page, and an error page after.
            await crawl.visit(page, f"{base}/ui/login")
            await sign_in(page, base, "a11y-admin")
            # "orders" as the pipeline page: "broken", first in the list, has one revision.
            await crawl.run(page, f"{base}/ui/pipelines", f"{base}/ui/pipelines/{pipeline_id}")
            await crawl.visit(page, f"{base}/ui/pipelines/{MISSING}", 404, "not-found")
            # A stream is opened and skipped, not taken for a page (nor a failure).
            assert not await crawl.visit(page, f"{base}/ui/runs/{run_id}/live")
            as_tenant_admin = list(crawl.checked)
            # The platform admin's pages (and header); the tenant's pages are not checked
            # twice, but its own start page is.
            await page.goto(f"{base}/ui/pipelines")
            await page.get_by_role("button", name="Sign out").click()
            await page.wait_for_url(f"{base}/ui/login")
            await sign_in(page, base, settings.admin_username or "", settings.admin_password or "")
            await crawl.run(page, f"{base}/ui/pipelines", skip=as_tenant_admin)
        print(f"\npages checked as the tenant admin: {as_tenant_admin}")
        print(f"pages checked as the platform admin: {crawl.checked[len(as_tenant_admin) :]}")
        print("minor findings (not failures):", *crawl.notes, sep="\n  ")
        print(f"screenshots: {ARTIFACTS}")
        # The crawl found the main pages (a broken link or nav would lose some).
        for expected in (
            "/ui/pipelines",
            "/ui/pipelines/{id}",
            "/ui/pipelines/{id}/diff?from&to",
            "/ui/runs",
            "/ui/runs/stats?window",
            "/ui/audit",
            "/ui/runs/{id}",
            "/ui/deployments",
            "/ui/deployments/{id}",
            "/ui/jobs",
            "/ui/jobs/{id}",
            "/ui/tenants",
        ):
            assert expected in crawl.checked, (expected, crawl.checked)
        assert not crawl.problems, "\n".join(crawl.problems)


# What each check must find, on a page made for it: grey on white (2.3:1), a field with
# no label, a link taken out of the tab order, and a box wider than a phone.
BAD_PAGE = """<!doctype html><html lang="en"><head><title>bad</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><main><h1>Bad</h1><p style="color:#aaa">faint text</p>
<input id="nameless"><a href="/x" tabindex="-1">skipped link</a>
<div style="width:600px">wide</div></main></body></html>"""


async def test_the_checks_find_what_they_look_for(tmp_path: Path) -> None:
    crawl = Crawl("http://127.0.0.1", screenshots=False)
    async with browser(tmp_path) as context:
        page = await context.new_page()
        await page.set_content(BAD_PAGE)
        await crawl.check(page, "checker-self-test")
    found = "\n".join(crawl.problems)
    assert "serious color-contrast" in found, found
    assert "critical label" in found, found
    assert "field without an accessible name: input #nameless" in found, found
    assert "out of the tab order (tabindex=-1): a /x skipped link" in found, found
    assert "not reached by Tab: ['a /x skipped link']" in found, found
    assert "scrolls sideways by" in found and "at 375px" in found, found
    assert "at 1280px" not in found, found
