"""Event triggers under a kill -9: two `norn scheduler` processes run the trigger loop
while runs of an upstream pipeline are queued; the one found in the middle of a pass,
preferably while it hands events to the triggers (some of their runs appended and
committed, the tracking row not yet moved), is SIGKILLed, and the other carries on.
Every upstream RunQueued starts exactly one downstream run: none lost, none twice.

The app (relay and projector, no executor: runs stay queued) runs in-process; the
downstream pipeline triggers on `norn.run.queued` of the upstream one, so the test needs
no executor. Checked from the event store."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg

from infrastructure.envelope import event_id
from infrastructure.settings import Settings
from tests.e2e.scheduler_processes import app_name, kill_in_a_pass, scheduler_process
from tests.integration.api_client import running_app
from tests.integration.run_helpers import make_pipeline, poll, run_events, step, tenant_editor

UPSTREAM_RUNS = 120
"""Runs queued at the least; more go on being queued until one loop was killed (so the
loops have passes to be caught in however fast they are), then AFTER_KILL more."""
AFTER_KILL = 20
MAX_UPSTREAM_RUNS = 600
HANDING_OVER = "FROM pipelines WHERE triggers"  # the pass's last statement while it hands over


def _queued(database_url: str) -> list[tuple[str, dict[str, Any], str]]:
    """(run id, RunQueued data, that event's id) of every run queued."""
    return [
        (event["originator_id"], event, event_id(event["originator_id"], 1))
        for name, event in run_events(database_url)
        if name == "RunQueued"
    ]


def _firings(database_url: str) -> Counter[str]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT split_part(topic, ':', 2) FROM norn_events"
            " WHERE topic LIKE 'domain.event_trigger:%'"
        ).fetchall()
    return Counter(row[0] for row in rows)


async def test_a_killed_trigger_loop_starts_each_triggered_run_exactly_once(
    settings: Settings, tmp_path: Path
) -> None:
    database_url = settings.database_url or ""
    async with running_app(settings) as client:
        tenant_id, editor, root = await tenant_editor(client, settings)
        quotas = await client.put(
            f"/api/v1/tenants/{tenant_id}/quotas",
            json={"max_runs_per_day": 1_000_000, "max_concurrent_runs": 100_000},
            headers=root,
        )
        assert quotas.status_code == 200, quotas.text
        upstream = await make_pipeline(
            client, editor, "upstream", step("a", "Input.file", config={"path": "x"})
        )
        downstream = await make_pipeline(
            client,
            editor,
            "downstream",
            step("a", "Input.file", config={"path": "x"}),
            triggers=[{"on": "norn.run.queued", "where": {"pipeline_id": upstream}}],
        )
        with (
            scheduler_process(settings, tmp_path / "a.log") as a,
            scheduler_process(settings, tmp_path / "b.log") as b,
        ):
            killing_done = asyncio.Event()

            async def queue_upstream() -> int:
                queued, after = 0, AFTER_KILL
                while queued < MAX_UPSTREAM_RUNS and (queued < UPSTREAM_RUNS or after > 0):
                    made = await client.post(
                        f"/api/v1/pipelines/{upstream}/runs", json={}, headers=editor
                    )
                    assert made.status_code == 202, made.text
                    queued += 1
                    after -= killing_done.is_set()
                    await asyncio.sleep(0.01)
                return queued

            queueing = asyncio.create_task(queue_upstream())
            named = {app_name(tmp_path / "a.log"): a, app_name(tmp_path / "b.log"): b}
            try:
                killed = await asyncio.to_thread(
                    kill_in_a_pass, database_url, named, 10.0, HANDING_OVER
                )
            finally:
                killing_done.set()
            upstream_runs = await queueing
            assert killed is not None, "no trigger loop was ever seen in the middle of a pass"
            victim, doing = killed
            print(f"killed pid {victim.pid} in a pass, at: {doing[:60]}")
            assert victim.returncode == -signal.SIGKILL
            survivor = b if victim is a else a

            async def all_fired() -> bool | None:
                fired = await asyncio.to_thread(_firings, database_url)
                return fired["TriggerFired"] >= upstream_runs or None

            await poll(all_fired, "a firing for every upstream run", seconds=60)
            await asyncio.sleep(1.0)  # time enough for a second firing, if one were coming
            assert survivor.poll() is None, "the survivor died"
            survivor.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(survivor.wait, 20) == 0

    queued = _queued(database_url)
    upstream_events = {eid for _, data, eid in queued if data["pipeline_id"] == upstream}
    triggered = [data["trigger"] for _, data, _ in queued if data["pipeline_id"] == downstream]
    assert len(upstream_events) == upstream_runs
    by_event = Counter(t["id"] for t in triggered)
    assert {e for e, n in by_event.items() if n > 1} == set(), "an event started two runs"
    assert set(by_event) == upstream_events, "an upstream run started no downstream run"
    assert all(t["kind"] == "event" and t["depth"] == 1 for t in triggered)
    assert _firings(database_url) == Counter({"TriggerFired": upstream_runs})
