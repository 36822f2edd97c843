"""Database round trips on the request path of the hot commands (warm caches), counted
statement by statement: authentication, tenant state and quota bounds are one query, rate limits
are decided in memory, and the append is one more (docs/architecture.md, "The write path")."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

from infrastructure.settings import Settings
from tests.integration.api_client import login, make_tenant_user, pipeline_body, running_app

MAX_ROUND_TRIPS = 3


class StatementCounter:
    """Counts every statement sent by psycopg (sync and async cursors) while active."""

    def __init__(self) -> None:
        self.statements: list[str] = []
        self.active = False

    @contextmanager
    def counting(self) -> Iterator[list[str]]:
        self.statements.clear()
        self.active = True
        try:
            yield self.statements
        finally:
            self.active = False


@pytest.fixture
def counter(monkeypatch: pytest.MonkeyPatch) -> StatementCounter:
    counter = StatementCounter()
    sync_execute = psycopg.Cursor.execute
    async_execute = psycopg.AsyncCursor.execute

    def execute(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        if counter.active:
            counter.statements.append(str(query)[:80])
        return sync_execute(self, query, *args, **kwargs)

    async def aexecute(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        # The rate limits' background sync is not on any request's path.
        if counter.active and "rate_limit_buckets" not in str(query):
            counter.statements.append(str(query)[:80])
        return await async_execute(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "execute", execute)
    monkeypatch.setattr(psycopg.AsyncCursor, "execute", aexecute)
    return counter


async def test_create_revise_and_trigger_take_at_most_three_round_trips(
    settings: Settings, counter: StatementCounter
) -> None:
    # No background roles: only the request's own statements are counted.
    async with running_app(settings, roles=frozenset()) as client:
        admin = await login(client, settings.admin_username or "", settings.admin_password or "")
        _, editor = await make_tenant_user(client, admin, "trips", projected=False)
        # Warm: the first create and the first trigger of the tenant (of the day) read
        # its usage and count it once (two more round trips); later ones decide on the
        # copy this process kept (README "Quotas").
        warm = await client.post("/api/v1/pipelines", json=pipeline_body("warm"), headers=editor)
        assert warm.status_code == 201, warm.text
        warm_run = await client.post(
            f"/api/v1/pipelines/{warm.json()['id']}/runs", json={}, headers=editor
        )
        assert warm_run.status_code in (201, 202), warm_run.text

        with counter.counting() as create:
            created = await client.post(
                "/api/v1/pipelines", json=pipeline_body("counted"), headers=editor
            )
        assert created.status_code == 201, created.text
        pipeline_id = created.json()["id"]
        assert len(create) <= MAX_ROUND_TRIPS, create

        with counter.counting() as revise:
            revised = await client.put(
                f"/api/v1/pipelines/{pipeline_id}",
                json=pipeline_body("counted", description="revised"),
                headers=editor,
            )
        assert revised.status_code == 200, revised.text
        assert len(revise) <= MAX_ROUND_TRIPS, revise

        with counter.counting() as trigger:
            queued = await client.post(
                f"/api/v1/pipelines/{pipeline_id}/runs", json={}, headers=editor
            )
        assert queued.status_code in (201, 202), queued.text
        assert len(trigger) <= MAX_ROUND_TRIPS, trigger


async def test_a_name_used_before_is_claimed_again_after_its_pipeline_is_deleted(
    settings: Settings,
) -> None:
    """A create first assumes its name was never claimed (no read); a name that was,
    and has been released by a delete, is taken over on the second try."""
    async with running_app(settings, roles=frozenset()) as client:
        admin = await login(client, settings.admin_username or "", settings.admin_password or "")
        _, editor = await make_tenant_user(client, admin, "names", projected=False)
        first = await client.post("/api/v1/pipelines", json=pipeline_body("orders"), headers=editor)
        assert first.status_code == 201
        taken = await client.post("/api/v1/pipelines", json=pipeline_body("orders"), headers=editor)
        assert taken.status_code in (409, 422), taken.text
        deleted = await client.delete(f"/api/v1/pipelines/{first.json()['id']}", headers=editor)
        assert deleted.status_code in (200, 204), deleted.text
        again = await client.post("/api/v1/pipelines", json=pipeline_body("orders"), headers=editor)
        assert again.status_code == 201, again.text
        assert again.json()["id"] != first.json()["id"]
