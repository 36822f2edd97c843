"""The webhooks read model on real PostgreSQL: Webhook aggregates appended to the real
event store give the right rows; a replay or a rebuild changes nothing; the queries page
and keep tenants apart. What the notifier keeps (routes, deliveries) is its own and
outlives a rebuild."""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

from application.event_store import NornEventStore
from domain.webhook import Webhook
from infrastructure.postgres import create_read_pool
from projections import WebhooksProjection, rebuild
from projections.webhook_queries import WebhookQueries
from tests.integration.deployment_support import CTX, T1, T2, project, table


def make(store: NornEventStore, tenant: str = T1, **fields: Any) -> UUID:
    fields = {"url": "https://hooks.example.com/x", "events": ("norn.run.*",), **fields}
    webhook = Webhook.create(
        webhook_id=uuid4(), tenant_id=tenant, secret_generated=True, ctx=CTX, **fields
    )
    store.append(webhook)
    return webhook.id


def change(store: NornEventStore, webhook_id: UUID, command: Any) -> None:
    webhook = store.load(Webhook, webhook_id, "webhook")
    command(webhook)
    store.append(webhook)


async def project_webhooks(database_url: str, **options: Any) -> None:
    await project(database_url, (WebhooksProjection(),), **options)


async def test_rows_follow_the_events_and_replay_and_rebuild_change_nothing(
    database_url: str, event_store: NornEventStore
) -> None:
    kept = make(event_store, description="ops")
    disabled = make(event_store)
    gone = make(event_store)
    make(event_store, tenant=T2)
    change(event_store, kept, lambda w: w.update(CTX, events=("norn.*",)))
    change(event_store, kept, lambda w: w.deactivate(CTX))
    change(event_store, kept, lambda w: w.activate(CTX))
    change(event_store, disabled, lambda w: w.disable(CTX, "20 consecutive failed deliveries"))
    change(event_store, gone, lambda w: w.delete(CTX))
    await project_webhooks(database_url, in_batches_of=2)
    before = await table(database_url, "webhooks", "id")
    rows = {str(r["id"]): r for r in before}
    assert (rows[str(kept)]["events"], rows[str(kept)]["active"]) == (["norn.*"], True)
    assert rows[str(kept)]["version"] == 4 and rows[str(kept)]["description"] == "ops"
    assert rows[str(disabled)]["active"] is False
    assert rows[str(disabled)]["disabled_reason"] == "20 consecutive failed deliveries"
    assert rows[str(gone)]["deleted"] is True
    assert not any("secret" in column for column in before[0] if column != "secret_generated")

    await project_webhooks(database_url)  # every event again: all at or below the position
    await rebuild(WebhooksProjection(), database_url)  # every event again, into new tables
    assert await table(database_url, "webhooks", "id") == before


async def test_queries_keep_tenants_apart_and_leave_deleted_ones_out(
    database_url: str, event_store: NornEventStore
) -> None:
    mine = [make(event_store) for _ in range(3)]
    theirs = make(event_store, tenant=T2)
    change(event_store, mine[0], lambda w: w.delete(CTX))
    change(event_store, mine[1], lambda w: w.deactivate(CTX))
    await project_webhooks(database_url)
    pool = create_read_pool(database_url, 2)
    await pool.open()
    try:
        queries = WebhookQueries(pool)
        first = await queries.list(T1, limit=1)
        second = await queries.list(T1, limit=1, cursor=first.next_cursor)
        listed = {item["id"] for item in (*first.items, *second.items)}
        assert listed == {str(mine[1]), str(mine[2])} and not second.has_more
        inactive = await queries.list(T1, active=False)
        assert [item["id"] for item in inactive.items] == [str(mine[1])]
        assert await queries.get(T1, theirs) is None
        assert (await queries.get(T2, theirs) or {})["id"] == str(theirs)
        assert (await queries.get(T1, mine[0]) or {})["deleted"] is True
        all_of_them = await queries.list(None)  # a platform admin outside any tenant
        assert {item["id"] for item in all_of_them.items} >= {str(theirs), str(mine[2])}
    finally:
        await pool.close()
