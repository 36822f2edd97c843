"""The deployments and schedules pages in a real browser (tests/e2e/ui_browser_support.py),
against the real app with an executor: a blue-green release whose verification run fails,
watched on its deployment's page (verifying with a ticking countdown, then failed with
the run's error while the previous release stays active, live: the page is never
reloaded), and a disabled job enabled from the schedules page (its
next fires appear)."""

from __future__ import annotations

from pathlib import Path

from infrastructure.settings import Settings
from tests.e2e.ui_browser_support import browser, shoot_and_fit, sign_in, skip_without_browser
from tests.integration.api_client import make_tenant_user, platform_admin, serving_app
from tests.integration.deployment_client import BASE, deploy, read_at
from tests.integration.run_support import EXECUTING, executing, make_pipeline, step

skip_without_browser()

JOBS = "/api/v1/scheduler/jobs"


async def test_a_failing_blue_green_release_watched_on_its_deployment_page(
    settings: Settings, tmp_path: Path
) -> None:
    settings = executing(settings)
    async with serving_app(settings, roles=EXECUTING) as api:
        base = str(api.base_url).rstrip("/")
        padmin = await platform_admin(api, settings)
        _, admin = await make_tenant_user(api, padmin, "green", "admin")
        pipeline_id = await make_pipeline(api, admin, "orders", [step("load", "Test.emit")])
        production = await deploy(api, admin, pipeline_id, "production")
        # Revision 2 waits (so the page sees it verifying), then fails for good.
        bad = [
            step("wait", "Test.sleep", seconds=4.0),
            step("load", "Test.fail", "wait", message="no such table", retryable=False),
        ]
        revised = await api.put(
            f"/api/v1/pipelines/{pipeline_id}", json={"name": "orders", "steps": bad}, headers=admin
        )
        assert revised.status_code == 200, revised.text
        path = f"{BASE}/{production['id']}"
        async with browser(tmp_path) as context:
            page = await context.new_page()
            await sign_in(page, base, "green-admin")
            # Released once the browser is ready, so the page opens while it verifies.
            green = {"type": "blue-green", "verification_timeout": 120}
            released = await api.post(f"{path}/releases", json={"strategy": green}, headers=admin)
            assert released.status_code == 202, released.text
            await read_at(api, admin, path, released.json()["position"])
            await page.get_by_role("link", name="Deployments").click()
            await page.get_by_role("link", name="orders").click()
            await page.wait_for_url(f"{base}/ui/deployments/{production['id']}")
            verifying = page.get_by_role("heading", name="Verifying release #2")
            assert await verifying.count() == 1, await page.locator("main").inner_text()
            assert await page.get_by_test_id("active-release").inner_text() == "#1"
            assert await page.locator('tr[data-release="2"] [data-outcome="verifying"]').count()
            # The countdown ticks in the browser (local-time.js), the server is not asked.
            countdown = page.get_by_test_id("countdown")
            ticked = await countdown.inner_text()
            assert ticked.endswith("s left"), ticked
            await page.wait_for_function(
                f"document.querySelector('[data-testid=countdown]')?.innerText !== {ticked!r}"
            )
            # The page is live: the outcome arrives over its feed, never by a reload.
            await page.evaluate("window.notReloaded = true")
            failed = page.locator('tr[data-release="2"] [data-outcome="failed"]')
            await failed.wait_for(timeout=30_000)
            assert await page.evaluate("window.notReloaded === true")
            assert await verifying.count() == 0
            row = await page.locator('tr[data-release="2"]').inner_text()
            assert "the verification run failed" in row and "no such table" in row, row
            assert await page.locator('tr[data-release="1"] [data-outcome="active"]').count() == 1
            assert await page.get_by_test_id("active-release").inner_text() == "#1"
            assert await page.get_by_test_id("deployment-status").inner_text() == "active"
            await shoot_and_fit(page, "deployment-failed-verification")
            # The release's verification run is one click away, failed at its step.
            await page.locator('tr[data-release="2"]').get_by_role("link", name="run").click()
            await page.wait_for_url(f"{base}/ui/runs/**")
            await page.wait_for_function(
                "document.querySelector('[data-testid=run-status]').innerText === 'failed'"
            )
            assert "no such table" in await page.locator('tr[data-step="load"]').inner_text()
        status = (await api.get(f"{path}/status", headers=admin)).json()
        assert (status["active_release"], status["active_revision"]) == (1, 1), status


async def test_enabling_a_schedule_from_the_jobs_page(settings: Settings, tmp_path: Path) -> None:
    async with serving_app(executing(settings)) as api:
        base = str(api.base_url).rstrip("/")
        padmin = await platform_admin(api, settings)
        _, admin = await make_tenant_user(api, padmin, "sched", "admin")
        pipeline_id = await make_pipeline(api, admin, "orders", [step("load", "Test.emit")])
        # Asia/Kolkata has no summer time: 03:00 there is always 21:30 UTC.
        made = await api.post(
            JOBS,
            json={
                "name": "nightly",
                "target": {"pipeline_id": pipeline_id},
                "cron_expr": "0 3 * * *",
                "timezone": "Asia/Kolkata",
                "enabled": False,
            },
            headers=admin,
        )
        assert made.status_code == 201, made.text
        job_id = made.json()["id"]
        await read_at(api, admin, f"{JOBS}/{job_id}", made.json()["position"])

        async with browser(tmp_path) as context:
            page = await context.new_page()
            await sign_in(page, base, "sched-admin")
            await page.get_by_role("link", name="Schedules").click()
            await page.wait_for_url(f"{base}/ui/jobs")
            row = page.locator(f'tr[data-job="{job_id}"]')
            assert await row.locator('[data-enabled="false"]').count() == 1
            assert "none while disabled" in await row.inner_text()
            await row.get_by_role("button", name="Enable nightly").click()
            await page.wait_for_url(f"{base}/ui/jobs/{job_id}?min_position=*")
            assert await page.get_by_test_id("job-state").inner_text() == "enabled"
            fires = page.locator("ol.fires li")
            assert await fires.count() > 0
            assert "03:00 IST" in await fires.first.inner_text()
            assert "21:30 UTC" in await fires.first.inner_text()
            # Now offered the opposite, and the list shows it enabled with its fires.
            assert await page.get_by_role("button", name="Disable nightly").count() == 1
            await page.get_by_role("link", name="Schedules").click()
            await page.wait_for_url(f"{base}/ui/jobs")
            assert await row.locator('[data-enabled="true"]').count() == 1
            assert "03:00 IST" in await row.inner_text()
        read = await api.get(f"{JOBS}/{job_id}", headers=admin)
        assert read.json()["enabled"] is True, read.text
