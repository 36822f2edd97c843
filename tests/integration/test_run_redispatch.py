"""The executors' maintenance sweep gives a work item back to queued runs that lost
theirs (with NATS, say), and leaves the others where they are in the queue."""

from __future__ import annotations

from datetime import timedelta

import nats
from psycopg import AsyncConnection

from infrastructure.executor_role import redispatch_lost
from infrastructure.settings import Settings
from infrastructure.work_queue import WorkStreams, work_stream, work_subject
from tests.integration.api_client import running_app
from tests.integration.run_helpers import (
    NO_EXECUTOR,
    make_pipeline,
    poll,
    run_settings,
    step,
    tenant_editor,
    trigger,
)


async def test_only_queued_runs_without_a_work_item_are_dispatched_again(
    settings: Settings,
) -> None:
    settings = run_settings(settings)
    async with running_app(settings, roles=NO_EXECUTOR) as client:
        tenant_id, editor, _ = await tenant_editor(client, settings)
        pipeline_id = await make_pipeline(client, editor, "p", step("e", "Test.emit"))
        kept = (await trigger(client, editor, pipeline_id))["run_id"]
        last = await trigger(client, editor, pipeline_id)
        lost = last["run_id"]
        listed = await client.get(
            "/api/v1/runs", params={"min_position": last["position"]}, headers=editor
        )
        assert {r["status"] for r in listed.json()["items"]} == {"queued"}

        nc = await nats.connect(settings.nats_url or "")
        try:
            js = nc.jetstream()
            streams = WorkStreams(js, settings.nats_stream, settings.subject_prefix)
            # The relay published both runs' items with their events; one is lost (as
            # with a NATS server that lost its storage).

            async def both_items() -> bool | None:
                present = [await streams.has_item(tenant_id, run) for run in (kept, lost)]
                return True if all(present) else None

            await poll(both_items, "the relay to publish both work items")
            await js.purge_stream(
                work_stream(settings.nats_stream),
                subject=work_subject(settings.subject_prefix, tenant_id, lost),
            )
            subject = work_subject(settings.subject_prefix, tenant_id, kept)
            before = await js.get_last_msg(work_stream(settings.nats_stream), subject)
            assert not await streams.has_item(tenant_id, lost)

            async with await AsyncConnection.connect(
                settings.database_url or "", autocommit=True
            ) as conn:
                assert await redispatch_lost(conn, streams, timedelta(0)) == 1
                assert await streams.has_item(tenant_id, lost)
                after = await js.get_last_msg(work_stream(settings.nats_stream), subject)
                assert after.seq == before.seq  # still in its place in the queue
                assert await redispatch_lost(conn, streams, timedelta(0)) == 0
                assert await redispatch_lost(conn, streams, timedelta(hours=1)) == 0
        finally:
            await nc.close()
