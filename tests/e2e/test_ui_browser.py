"""The dashboard in a real browser: Debian's headless Chromium (/usr/bin/chromium) driven
by Playwright against the real app under uvicorn, with an executor running the Test
plugins. Signs in, creates a pipeline on the New pipeline form, runs it and watches it
finish live on the run page (the
state arrives over the SSE feed: the page is never reloaded), and checks that a viewer
is offered no write buttons. Screenshots of the main pages at 1280 px and 375 px are
kept under .artifacts/ui-screenshots/ (ignored by git; the path is printed).

Skipped only when /usr/bin/chromium is absent and NORN_REQUIRE_BROWSER is unset; CI
(.ci/run) installs Chromium and sets it, so there the tests always run."""

from __future__ import annotations

import json
import re
from pathlib import Path

from infrastructure.settings import Settings
from tests.e2e.ui_browser_support import (
    ARTIFACTS,
    PASSWORD,
    browser,
    shoot_and_fit,
    sign_in,
    skip_without_browser,
)
from tests.integration.api_client import make_tenant_user, platform_admin, serving_app
from tests.integration.run_support import EXECUTING, executing, make_pipeline, step

skip_without_browser()


async def test_sign_in_run_a_pipeline_and_watch_it_finish_live(
    settings: Settings, tmp_path: Path
) -> None:
    settings = executing(settings)
    async with serving_app(settings, roles=EXECUTING) as api:
        base = str(api.base_url).rstrip("/")
        admin = await platform_admin(api, settings)
        await make_tenant_user(api, admin, "browser", "editor")
        steps = [
            step("extract", "Test.emit"),
            step("wait", "Test.sleep", "extract", seconds=2.0),
            step("load", "Test.emit", "wait"),
        ]
        async with browser(tmp_path) as context:
            page = await context.new_page()
            await sign_in(page, base, "browser-editor")
            # Created in the browser: the definition as JSON on the New pipeline form.
            await page.get_by_role("link", name="New pipeline").click()
            await page.wait_for_url(f"{base}/ui/pipelines/new")
            definition = {"name": "nightly-orders", "steps": steps}
            await page.get_by_label("Definition (JSON)").fill(json.dumps(definition, indent=2))
            await page.get_by_role("button", name="Create pipeline").click()
            created = re.compile(rf"{re.escape(base)}/ui/pipelines/[0-9a-f-]{{36}}\?")
            await page.wait_for_url(created)
            pipeline_id = page.url.split("/ui/pipelines/")[1].split("?")[0]
            await page.get_by_role("link", name="Pipelines").click()
            await page.get_by_role("link", name="nightly-orders").click()
            await page.wait_for_url(f"{base}/ui/pipelines/{pipeline_id}")
            assert await page.locator('[data-step="wait"]').count() == 1
            await shoot_and_fit(page, "pipeline")
            await page.get_by_label("Params (a JSON object)").fill('{"day": "2026-01-01"}')
            await page.get_by_role("button", name="Run pipeline").click()
            await page.wait_for_url(f"{base}/ui/runs/**")
            status = page.get_by_test_id("run-status")
            # Not finished when the page first showed it (the wait step takes 2 s) ...
            first = await status.inner_text()
            assert first in ("queued", "running"), first
            navigations: list[str] = []
            page.on("framenavigated", lambda frame: navigations.append(frame.url))
            # ... and finished without a reload: the SSE feed swapped the state in.
            await page.wait_for_function(
                "document.querySelector('[data-testid=run-status]').innerText === 'succeeded'",
                timeout=30_000,
            )
            assert navigations == [], navigations
            rows = page.locator("tbody tr[data-step]")
            assert await rows.count() == 3
            assert "succeeded" in await rows.nth(2).inner_text()
            # A succeeded run offers no retry (the API retries unsuccessful runs only).
            assert await page.get_by_role("button", name="Retry").count() == 0
            await shoot_and_fit(page, "run")
            await page.goto(f"{base}/ui/runs")
            await shoot_and_fit(page, "runs")
            await page.goto(f"{base}/ui/pipelines")
            await shoot_and_fit(page, "pipelines")
            await page.get_by_role("button", name="Sign out").click()
            await page.wait_for_url(f"{base}/ui/login")
            await shoot_and_fit(page, "login")
        print(f"screenshots: {ARTIFACTS}")


async def test_a_viewer_sees_no_write_buttons(settings: Settings, tmp_path: Path) -> None:
    settings = executing(settings)
    async with serving_app(settings, roles=EXECUTING) as api:
        base = str(api.base_url).rstrip("/")
        admin = await platform_admin(api, settings)
        tenant_id, editor = await make_tenant_user(api, admin, "watchers", "editor")
        pipeline_id = await make_pipeline(api, editor, "watched", [step("only", "Test.emit")])
        queued = await api.post(
            f"/api/v1/pipelines/{pipeline_id}/runs", json={"params": {}}, headers=editor
        )
        assert queued.status_code == 202, queued.text
        viewer = await api.post(
            "/api/v1/users",
            json={
                "username": "watchers-viewer",
                "password": PASSWORD,
                "tenant_id": tenant_id,
                "roles": ["viewer"],
            },
            headers=admin,
        )
        assert viewer.status_code == 201, viewer.text
        async with browser(tmp_path) as context:
            page = await context.new_page()
            await sign_in(page, base, "watchers-viewer")
            await page.goto(f"{base}/ui/pipelines/{pipeline_id}")
            assert await page.get_by_role("heading", name="watched").count() == 1
            # The only button a viewer gets is signing out.
            buttons = await page.get_by_role("button").all_inner_texts()
            assert buttons == ["Sign out"], buttons
            await page.goto(f"{base}/ui/runs/{queued.json()['run_id']}")
            await page.wait_for_function(
                "document.querySelector('[data-testid=run-status]').innerText === 'succeeded'",
                timeout=30_000,
            )
            buttons = await page.get_by_role("button").all_inner_texts()
            assert buttons == ["Sign out"], buttons
            await shoot_and_fit(page, "viewer-run")
