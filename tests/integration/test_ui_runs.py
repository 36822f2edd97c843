"""The dashboard's runs pages over the real app under a real HTTP server (incremental
SSE), PostgreSQL, NATS and an executor running real runs: the running / recent / failed
views, the live list (updates on a run of the tenant, never on another tenant's), the
statistics page (numbers of the runs made here, inline SVG, a 400 page for a bad
window), 404 pages for another tenant's run and pipeline, and the live run page giving
the current state again after a dropped connection."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from infrastructure.settings import Settings
from tests.integration.api_client import make_tenant_user, platform_admin, serving_app, visible
from tests.integration.run_support import (
    EXECUTING,
    executing,
    finished,
    make_pipeline,
    run_to_end,
    step,
    trigger,
)
from tests.integration.test_api_feed import Sse, SseReader
from tests.integration.test_ui import csrf_of, sign_in

HAS_CHROMIUM = Path("/usr/bin/chromium").exists() or bool(os.environ.get("NORN_REQUIRE_BROWSER"))
_RUN_ROW = re.compile(r'data-run="([0-9a-f-]{36})"')
_SEGMENT = re.compile(r'data-outcome="(\w+)" data-count="(\d+)"')


@contextlib.asynccontextmanager
async def live(http: httpx.AsyncClient, path: str) -> AsyncIterator[SseReader]:
    async with http.stream("GET", path) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        reader = SseReader(response)
        try:
            yield reader
        finally:
            await reader.close()


async def first_fragment(reader: SseReader, event: str) -> Sse:
    """The first message: the whole fragment, sent on connect."""
    message = await reader.until(lambda m: m.event is not None)
    assert message[-1].event == event, message
    return message[-1]


async def quiet(reader: SseReader, seconds: float) -> list[Sse]:
    """What the stream sends within `seconds` (keep-alives left out)."""
    got: list[Sse] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            while True:
                message = await reader.next(seconds)
                if message.event:
                    got.append(message)
    return got


async def queued_run(http: httpx.AsyncClient, headers: dict[str, str], pipeline: str) -> str:
    """A new run of `pipeline`, once the runs read model has it (its page exists)."""
    queued = await http.post(
        f"/api/v1/pipelines/{pipeline}/runs", json={"params": {}}, headers=headers
    )
    assert queued.status_code == 202, queued.text
    run_id = str(queued.json()["run_id"])
    await visible(http, headers, f"/api/v1/runs/{run_id}", queued.json()["position"])
    return run_id


def shown_runs(html: str) -> set[str]:
    return set(_RUN_ROW.findall(html))


async def test_views_live_list_stats_and_isolation(settings: Settings) -> None:
    async with serving_app(executing(settings), roles=EXECUTING) as http:
        admin = await platform_admin(http, settings)
        _, editor_a = await make_tenant_user(http, admin, "uiruns-a", "editor")
        _, editor_b = await make_tenant_user(http, admin, "uiruns-b", "editor")
        good = await make_pipeline(http, editor_a, "a-good", [step("a", "Test.emit")])
        bad = await make_pipeline(
            http,
            editor_a,
            "a-bad",
            [step("a", "Test.emit"), step("b", "Test.fail", "a", retryable=False)],
        )
        slow = await make_pipeline(
            http, editor_a, "a-slow", [step("nap", "Test.sleep", seconds=30)]
        )
        theirs = await make_pipeline(http, editor_b, "b-only", [step("a", "Test.emit")])
        succeeded = (await run_to_end(http, editor_a, good))["id"]
        failed = (await run_to_end(http, editor_a, bad))["id"]
        running = await trigger(http, editor_a, slow)

        assert (await sign_in(http, "uiruns-a-editor")).status_code == 303
        recent = await http.get("/ui/runs")
        assert recent.status_code == 200
        assert shown_runs(recent.text) == {succeeded, failed, running}
        assert 'aria-current="page">Recent' in recent.text
        assert 'href="/ui/runs?view=failed"' in recent.text  # the tabs are links
        failed_view = await http.get("/ui/runs", params={"view": "failed"})
        assert shown_runs(failed_view.text) == {failed}
        running_view = await http.get("/ui/runs", params={"view": "running"})
        assert shown_runs(running_view.text) == {running}
        wrong = await http.get("/ui/runs", params={"view": "everything"})
        assert wrong.status_code == 400
        assert "view must be one of recent, running, failed" in wrong.text
        await http.post(f"/api/v1/runs/{running}/cancel", headers=editor_a)
        await finished(http, editor_a, running)

        async with httpx.AsyncClient(base_url=http.base_url, timeout=30) as http_b:
            assert (await sign_in(http_b, "uiruns-b-editor")).status_code == 303
            async with (
                live(http, "/ui/runs/live?view=recent") as feed_a,
                live(http_b, "/ui/runs/live?view=recent") as feed_b,
            ):
                first_a = await first_fragment(feed_a, "runs")
                assert shown_runs(first_a.data) == {succeeded, failed, running}
                assert first_a.id is not None and first_a.id.isdigit()
                first_b = await first_fragment(feed_b, "runs")
                assert shown_runs(first_b.data) == set()

                # A's new run reaches A's list, live, and never B's.
                new = await trigger(http, editor_a, good)
                await feed_a.until(lambda m: m.event == "runs" and new in m.data)
                assert all(new not in m.data for m in await quiet(feed_b, 1.5))
                # B's own run does reach B's list (so B's stream works), without A's runs.
                own = await trigger(http, editor_b, theirs)
                got = await feed_b.until(lambda m: m.event == "runs" and own in m.data)
                assert all(shown_runs(m.data) <= {own} for m in got)
                await finished(http, editor_a, new)
                await finished(http, editor_b, own)

            # B: A's run and its feed are not found; A's pipeline's statistics neither.
            for path in (f"/ui/runs/{failed}", f"/ui/runs/{failed}/live"):
                other = await http_b.get(path)
                assert other.status_code == 404, (path, other.text)
                assert "a-bad" not in other.text
            other_stats = await http_b.get("/ui/runs/stats", params={"pipeline_id": bad})
            assert other_stats.status_code == 404
            b_stats = await http_b.get("/ui/runs/stats")
            assert b_stats.status_code == 200
            assert 'data-count="total">1<' in b_stats.text and "a-good" not in b_stats.text

        # A's statistics: the runs made here, by outcome, as numbers and as SVG bars.
        stats = await http.get("/ui/runs/stats", params={"window": "24h"})
        assert stats.status_code == 200, stats.text
        for key, count in (("total", 4), ("succeeded", 2), ("failed", 1), ("cancelled", 1)):
            assert f'data-count="{key}">{count}<' in stats.text, key
        bars: dict[str, int] = {}
        for outcome, count in _SEGMENT.findall(stats.text):
            bars[outcome] = bars.get(outcome, 0) + int(count)
        assert bars == {"succeeded": 2, "failed": 1, "cancelled": 1}
        assert '<svg viewBox="0 0 640 240" role="img"' in stats.text
        assert '<title id="runs-title">Runs per hour by outcome' in stats.text
        assert 'class="line-p50"' in stats.text  # finished runs have durations
        assert stats.text.count('<th scope="row">') >= 24 + 3  # each hour; each pipeline
        one = await http.get("/ui/runs/stats", params={"window": "30d", "pipeline_id": bad})
        assert one.status_code == 200
        assert 'data-count="total">1<' in one.text and 'data-count="failed">1<' in one.text
        assert "Runs per day by outcome" in one.text
        wrong_window = await http.get("/ui/runs/stats", params={"window": "1y"})
        assert wrong_window.status_code == 400
        assert "window must be one of 24h, 7d, 30d" in wrong_window.text
        bad_id = await http.get("/ui/runs/stats", params={"pipeline_id": "nope"})
        assert bad_id.status_code == 400


async def test_live_run_page_reconnects_to_the_current_state(settings: Settings) -> None:
    """A dropped connection misses the run's end; the reconnect's first message (with
    the Last-Event-ID the browser sends) is the current state all the same."""
    async with serving_app(executing(settings), roles=EXECUTING) as http:
        admin = await platform_admin(http, settings)
        _, editor = await make_tenant_user(http, admin, "uiruns-live", "editor")
        pipeline = await make_pipeline(
            http, editor, "naps", [step("nap", "Test.sleep", seconds=1.5), step("a", "Test.emit")]
        )
        run_id = await queued_run(http, editor, pipeline)
        assert (await sign_in(http, "uiruns-live-editor")).status_code == 303
        async with live(http, f"/ui/runs/{run_id}/live") as feed:
            before = await first_fragment(feed, "run")
            assert re.search(r'data-testid="run-status">(queued|running)<', before.data)
        # The network drops here; the run ends meanwhile.
        assert (await finished(http, editor, run_id))["status"] == "succeeded"
        headers = {"Last-Event-ID": before.id or "0"}
        async with http.stream("GET", f"/ui/runs/{run_id}/live", headers=headers) as response:
            assert response.status_code == 200
            reader = SseReader(response)
            try:
                again = await first_fragment(reader, "run")
            finally:
                await reader.close()
        assert 'data-testid="run-status">succeeded<' in again.data
        # A succeeded run offers no retry (the API would refuse it).
        assert 'data-action="retry"' not in again.data and 'data-step="a"' in again.data
        # And a stream kept open sees a run through to its end.
        second = await queued_run(http, editor, pipeline)
        async with live(http, f"/ui/runs/{second}/live") as feed:
            await first_fragment(feed, "run")
            await feed.until(lambda m: 'data-testid="run-status">succeeded<' in m.data, 30)


async def test_in_a_browser_the_list_goes_live_and_the_pages_fit(
    settings: Settings, tmp_path: Path
) -> None:
    """Chromium: the runs list shows a new run without a reload (the SSE swap), the
    tabs are reachable by keyboard, and the list and statistics pages fit at 375 px."""
    if not HAS_CHROMIUM:
        pytest.skip("/usr/bin/chromium is not installed (CI installs it)")
    from tests.e2e.ui_browser_support import browser, shoot
    from tests.e2e.ui_browser_support import sign_in as browser_sign_in

    async with serving_app(executing(settings), roles=EXECUTING) as http:
        base = str(http.base_url).rstrip("/")
        admin = await platform_admin(http, settings)
        _, editor = await make_tenant_user(http, admin, "uiruns-browser", "editor")
        pipeline = await make_pipeline(http, editor, "charted", [step("a", "Test.emit")])
        await run_to_end(http, editor, pipeline)
        async with browser(tmp_path) as context:
            page = await context.new_page()
            navigations: list[str] = []
            await browser_sign_in(page, base, "uiruns-browser-editor")
            await page.goto(f"{base}/ui/runs?view=recent")
            page.on("framenavigated", lambda frame: navigations.append(frame.url))
            rows = page.locator("#runs-list tr[data-run]")
            assert await rows.count() == 1
            await page.wait_for_timeout(500)  # the stream connects
            new = await trigger(http, editor, pipeline)
            await page.locator(f'#runs-list tr[data-run="{new}"]').wait_for(timeout=20_000)
            assert navigations == [], navigations
            await shoot(page, "runs-live")
            # The tabs are links in the tab order.
            await page.keyboard.press("Tab")
            for _ in range(20):
                focused = await page.evaluate("document.activeElement.textContent")
                if focused == "Failed":
                    break
                await page.keyboard.press("Tab")
            assert focused == "Failed"
            await page.keyboard.press("Enter")
            await page.wait_for_url(f"{base}/ui/runs?view=failed")
            assert await page.get_by_text("No failed runs.").count() == 1
            await finished(http, editor, new)
            for window in ("24h", "30d"):
                await page.goto(f"{base}/ui/runs/stats?window={window}")
                svg = page.locator('svg[data-chart="runs"]')
                assert await svg.get_attribute("role") == "img"
                assert (await svg.bounding_box() or {}).get("height", 0) > 50
                await shoot(page, f"run-stats-{window}")


async def test_a_retry_from_the_run_page_links_both_runs(settings: Settings) -> None:
    """The failed run's page retries it; the retry's page links back, the first run's
    page links to its retry, and a second retry while that one goes on is refused. The
    first run's live page, open throughout, drops its Retry button when the retry is
    made and shows it again when the retry ends, without a reload."""
    async with serving_app(executing(settings), roles=EXECUTING) as http:
        admin = await platform_admin(http, settings)
        _, editor = await make_tenant_user(http, admin, "uiruns-retry", "editor")
        pipeline = await make_pipeline(
            http, editor, "naps", [step("nap", "Test.sleep", seconds=3600)]
        )
        run_id = await queued_run(http, editor, pipeline)
        stop = await http.post(f"/api/v1/runs/{run_id}/cancel", headers=editor)
        assert stop.status_code == 202, stop.text
        assert (await finished(http, editor, run_id))["status"] == "cancelled"
        assert (await sign_in(http, "uiruns-retry-editor")).status_code == 303
        page = await http.get(f"/ui/runs/{run_id}")
        assert 'data-action="retry"' in page.text
        form = {"csrf_token": csrf_of(page.text)}
        async with live(http, f"/ui/runs/{run_id}/live") as feed:
            assert 'data-action="retry"' in (await first_fragment(feed, "run")).data
            await _retried_then_ended_live(http, editor, run_id, form, feed)
        assert 'data-action="retry"' in (await http.get(f"/ui/runs/{run_id}")).text


async def _retried_then_ended_live(
    http: httpx.AsyncClient,
    editor: dict[str, str],
    run_id: str,
    form: dict[str, str],
    feed: SseReader,
) -> None:
    retried = await http.post(f"/ui/runs/{run_id}/retry", data=form)
    assert retried.status_code == 303, retried.text
    retry_id = retried.headers["location"].split("/ui/runs/")[1].split("?")[0]
    shown = await http.get(retried.headers["location"])
    assert f'href="/ui/runs/{run_id}" data-testid="retry-of"' in shown.text
    position = retried.headers["location"].split("min_position=")[1]
    first = await http.get(f"/ui/runs/{run_id}?min_position={position}")
    assert f'href="/ui/runs/{retry_id}" data-testid="retried-by"' in first.text
    assert 'data-action="retry"' not in first.text  # its retry goes on
    refused = await http.post(f"/ui/runs/{run_id}/retry", data=form)
    assert refused.status_code == 409, refused.text
    assert f"retried already, as run {retry_id}" in refused.text
    linked = await feed.until(lambda m: 'data-testid="retried-by"' in m.data, 20)
    assert 'data-action="retry"' not in linked[-1].data
    stop = await http.post(f"/api/v1/runs/{retry_id}/cancel", headers=editor)
    assert stop.status_code == 202, stop.text
    assert (await finished(http, editor, retry_id))["status"] == "cancelled"
    # The retry's end comes to the first run's page, which offers a retry again.
    await feed.until(lambda m: 'data-action="retry"' in m.data, 20)
