"""GET /api/v1/runs/statistics over HTTP against real Postgres and NATS: counts, success
rate, average and p95 duration, per pipeline and per UTC day, checked against runs whose
outcome is known (real executions of Test plugins, and rows seeded at exact times)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest

from infrastructure.settings import Settings
from tests.integration.api_client import login, make_tenant_user, running_app
from tests.integration.run_support import (
    EXECUTING,
    executing,
    finished,
    make_pipeline,
    seed_run,
    step,
    trigger,
)

STATS = "/api/v1/runs/statistics"
ZERO = {
    "queued": 0,
    "running": 0,
    "succeeded": 0,
    "failed": 0,
    "cancelled": 0,
    "timed_out": 0,
    "crashed": 0,
}


def percentile_cont(values: list[float], fraction: float) -> float:
    """PostgreSQL's percentile_cont: linear interpolation between the closest ranks."""
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def counts(body: dict[str, Any]) -> dict[str, Any]:
    """The count fields of a totals / per-pipeline / per-day entry."""
    keys = [*ZERO, "total", "finished", "success_rate", "avg_duration_ms", "p95_duration_ms"]
    return {key: body[key] for key in keys}


def expected(runs: list[dict[str, Any]]) -> dict[str, Any]:
    by_status = dict(ZERO)
    for run in runs:
        by_status[run["status"]] += 1
    durations = [run["duration_ms"] for run in runs]
    return {
        **by_status,
        "total": len(runs),
        "finished": len(runs),
        "success_rate": pytest.approx(by_status["succeeded"] / len(runs)),
        "avg_duration_ms": pytest.approx(sum(durations) / len(durations), abs=0.001),
        "p95_duration_ms": pytest.approx(percentile_cont(durations, 0.95), abs=0.001),
    }


async def test_statistics_of_executed_runs_count_exactly_what_happened(settings: Settings) -> None:
    settings = executing(settings)
    async with running_app(settings, roles=EXECUTING) as client:
        root = await login(client, settings.admin_username or "", settings.admin_password or "")
        tenant_id, editor = await make_tenant_user(client, root, "acme", "editor")
        good = await make_pipeline(
            client,
            editor,
            "good",
            [step("a", "Test.emit", count=2), step("b", "Test.emit", "a", count=1)],
        )
        bad = await make_pipeline(
            client,
            editor,
            "bad",
            [step("a", "Test.emit"), step("b", "Test.fail", "a", retryable=False)],
        )
        ids = [await trigger(client, editor, p) for p in (good, bad, good, bad, good)]
        runs = [await finished(client, editor, run_id) for run_id in ids]
        assert [r["status"] for r in runs] == ["succeeded", "failed"] * 2 + ["succeeded"]
        good_runs = [r for r in runs if r["pipeline_id"] == good]
        bad_runs = [r for r in runs if r["pipeline_id"] == bad]

        response = await client.get(STATS, headers=editor)
        assert response.status_code == 200, response.text
        body = response.json()
        assert counts(body["totals"]) == expected(runs)
        assert body["totals"]["success_rate"] == 0.6
        assert [(p["pipeline_name"], p["tenant_id"]) for p in body["per_pipeline"]] == [
            ("good", tenant_id),
            ("bad", tenant_id),
        ]
        assert counts(body["per_pipeline"][0]) == expected(good_runs)
        assert counts(body["per_pipeline"][1]) == expected(bad_runs)
        assert body["per_pipeline"][1]["success_rate"] == 0.0

        # The default window: the last 30 days, every UTC day of it listed.
        since, until = (datetime.fromisoformat(body[k]) for k in ("since", "until"))
        assert until - since == timedelta(days=30)
        assert abs(datetime.now(UTC) - until) < timedelta(minutes=5)
        days = [date.fromisoformat(d["day"]) for d in body["per_day"]]
        assert days[0] == since.astimezone(UTC).date() and days[-1] == until.astimezone(UTC).date()
        assert days == [days[0] + timedelta(days=n) for n in range(len(days))]
        per_day = {d["day"]: d for d in body["per_day"]}
        for day in {r["queued_at"][:10] for r in runs}:
            on_day = [r for r in runs if r["queued_at"][:10] == day]
            assert counts(per_day[day]) == expected(on_day)
        assert sum(d["total"] for d in body["per_day"]) == 5
        quiet = next(
            d for d in body["per_day"] if d["day"] not in {r["queued_at"][:10] for r in runs}
        )
        assert counts(quiet) == {
            **ZERO,
            "total": 0,
            "finished": 0,
            "success_rate": None,
            "avg_duration_ms": None,
            "p95_duration_ms": None,
        }

        one = await client.get(STATS, params={"pipeline_id": bad}, headers=editor)
        assert one.json()["pipeline_id"] == bad
        assert counts(one.json()["totals"]) == expected(bad_runs)
        assert [p["pipeline_id"] for p in one.json()["per_pipeline"]] == [bad]

        before = min(r["queued_at"] for r in runs)
        earlier = await client.get(STATS, params={"until": before}, headers=editor)
        assert earlier.status_code == 200, earlier.text
        assert earlier.json()["totals"]["total"] == 0 and earlier.json()["per_pipeline"] == []

        # Platform admins see every tenant without X-Tenant-ID, one tenant with it.
        other_id, other = await make_tenant_user(client, root, "other", "editor")
        other_pipeline = await make_pipeline(client, other, "theirs", [step("a", "Test.emit")])
        await finished(client, other, await trigger(client, other, other_pipeline))
        everyone = (await client.get(STATS, headers=root)).json()
        assert everyone["totals"]["total"] == 6 and everyone["totals"]["succeeded"] == 4
        assert {p["tenant_id"] for p in everyone["per_pipeline"]} == {tenant_id, other_id}
        acting = {**root, "X-Tenant-ID": tenant_id}
        assert (await client.get(STATS, headers=acting)).json()["totals"] == body["totals"]
        assert (await client.get(STATS, headers=other)).json()["totals"]["total"] == 1


async def test_statistics_window_days_and_percentiles_are_exact(settings: Settings) -> None:
    async with running_app(settings) as client:
        root = await login(client, settings.admin_username or "", settings.admin_password or "")
        tenant_id, viewer = await make_tenant_user(client, root, "acme", "viewer")
        p1, p2 = uuid4(), uuid4()
        url = settings.database_url or ""

        def at(text: str) -> datetime:
            return datetime.fromisoformat(text).replace(tzinfo=UTC)

        seeded = [
            (p1, "2024-02-29T23:59:59.999", "succeeded", 50.0, "p1"),  # before the window
            (p1, "2024-03-01T00:00:00", "succeeded", 100.0, "p1"),  # since is inclusive
            (p1, "2024-03-01T10:00:00", "succeeded", 300.0, "p1"),
            (p2, "2024-03-02T12:00:00", "failed", 1000.0, "p2"),
            (p2, "2024-03-02T13:00:00", "cancelled", None, "p2"),  # cancelled while queued
            (p1, "2024-03-02T14:00:00", "running", None, "p1"),
            (p1, "2024-03-02T15:00:00", "queued", None, "p1-renamed"),
            (p2, "2024-03-03T23:59:59.999", "timed_out", 2000.0, "p2"),
            (p1, "2024-03-04T00:00:00", "succeeded", 5000.0, "p1"),  # until is exclusive
        ]
        for pipeline, queued, status, duration, name in seeded:
            await seed_run(url, tenant_id, pipeline, at(queued), status, duration, name)
        window = {"since": "2024-03-01", "until": "2024-03-04T00:00:00Z"}
        response = await client.get(STATS, params=window, headers=viewer)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["since"] == "2024-03-01T00:00:00Z" and body["until"] == "2024-03-04T00:00:00Z"
        assert counts(body["totals"]) == {
            **ZERO,
            "succeeded": 2,
            "failed": 1,
            "cancelled": 1,
            "timed_out": 1,
            "running": 1,
            "queued": 1,
            "total": 7,
            "finished": 5,
            "success_rate": 0.4,
            "avg_duration_ms": 850.0,  # mean of 100, 300, 1000, 2000
            "p95_duration_ms": 1850.0,  # 1000 + 0.85 * (2000 - 1000)
        }
        assert [d["day"] for d in body["per_day"]] == ["2024-03-01", "2024-03-02", "2024-03-03"]
        day1, day2, day3 = (counts(d) for d in body["per_day"])
        assert (day1["total"], day1["succeeded"], day1["success_rate"]) == (2, 2, 1.0)
        assert (day1["avg_duration_ms"], day1["p95_duration_ms"]) == (200.0, 290.0)
        assert (day2["total"], day2["finished"], day2["success_rate"]) == (4, 2, 0.0)
        assert (day2["avg_duration_ms"], day2["p95_duration_ms"]) == (1000.0, 1000.0)
        assert (day3["total"], day3["timed_out"], day3["avg_duration_ms"]) == (1, 1, 2000.0)
        first, second = body["per_pipeline"]
        assert (first["pipeline_id"], first["pipeline_name"]) == (str(p1), "p1-renamed")
        assert (first["total"], first["finished"], first["success_rate"]) == (4, 2, 1.0)
        assert (second["pipeline_id"], second["total"], second["success_rate"]) == (str(p2), 3, 0.0)
        assert (second["avg_duration_ms"], second["p95_duration_ms"]) == (1500.0, 1950.0)

        # The same instants written with an offset, or without one (read as UTC).
        for since in ("2024-03-01T02:00:00+02:00", "2024-03-01T00:00:00"):
            same = await client.get(STATS, params={**window, "since": since}, headers=viewer)
            assert same.status_code == 200, same.text
            assert same.json()["totals"] == body["totals"]
            assert same.json()["since"] == "2024-03-01T00:00:00Z"  # answered in UTC
        instant = {"since": "2024-03-02T12:00:00Z", "until": "2024-03-02T12:00:00.001Z"}
        narrow = (await client.get(STATS, params=instant, headers=viewer)).json()
        assert (narrow["totals"]["total"], narrow["totals"]["failed"]) == (1, 1)
        assert [d["day"] for d in narrow["per_day"]] == ["2024-03-02"]
