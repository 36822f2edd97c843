"""The trigger role: reads the event store in position order and hands each tenant event
that a pipeline's trigger may match to application/event_triggers.py. It runs inside the
scheduler role (`norn scheduler`, and `norn serve`).

Any number may run: a pass holds the one tracking row (event_trigger_tracking, migration
0017) with FOR UPDATE SKIP LOCKED, so one reads at a time and the others skip their pass.
The tracking position moves in the pass's transaction only after its events were
handled; a role killed mid-pass leaves the row where it was, and the next pass handles
those events again, which starts nothing twice (each firing's id derives from the
pipeline and the event). The store is read below the precise horizon, as the relay
reads it, so no event is passed over. A pass reads no further than the pipelines and
deployments read models have: they nominate the pipelines and deployments with triggers
(the decision itself is on them as the event store has them), so they must include
every change made before the events the pass handles.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from typing import Any

import psycopg

from application.event_triggers import EventTriggers, Firing, Target, TenantEvent
from application.threads import in_thread
from domain.event_trigger import EventTrigger, may_trigger
from infrastructure.envelope import CloudEvent, to_cloud_event
from infrastructure.notification_log import max_position, read_notifications, settled_position
from infrastructure.supervision import Backoff, pause, supervise

log = logging.getLogger(__name__)

_HOLD = "SELECT position FROM event_trigger_tracking WHERE name = 'triggers' FOR UPDATE SKIP LOCKED"
_MOVE = (
    "UPDATE event_trigger_tracking SET position = %s, updated_at = now() WHERE name = 'triggers'"
)
_PROJECTED = (
    "SELECT COALESCE(MIN(position), 0), count(*) FROM projection_tracking"
    " WHERE name IN ('pipelines', 'deployments')"
)
_WITH_TRIGGERS = "SELECT kind, id, tenant_id, triggers FROM norn_trigger_targets()"
"""Through the partial indexes, whatever the statistics say (migration 0027)."""


class TriggerRole:
    def __init__(
        self,
        database_url: str,
        triggers: EventTriggers,
        *,
        interval: float = 0.2,
        batch: int = 500,
        observe: Any = None,
    ) -> None:
        self._database_url = database_url
        self._triggers = triggers
        self._interval = interval
        self._batch = batch
        self._observe = observe
        """Called with each pass's firings (metrics)."""
        self._caught_up: int | None = None
        """The store's newest position when a pass of this role last left the tracking
        row there. While no event is newer, a pass could find nothing to do: the idle
        role asks only for the newest position, not for a whole pass (six statements,
        one a scan of every pipeline with triggers, five times a second)."""

    async def run(self, stop: asyncio.Event) -> None:
        await supervise(
            "triggers",
            lambda: self._serve(stop),
            stop=stop,
            backoff=Backoff(first=0.5, cap=5.0),
            quiet=(psycopg.OperationalError,),
            logger=log,
        )

    async def _serve(self, stop: asyncio.Event) -> None:
        async with await psycopg.AsyncConnection.connect(
            self._database_url, autocommit=True
        ) as conn:
            while not stop.is_set():
                newest = await max_position(conn)
                if newest == self._caught_up or not await self.run_pass(conn, newest):
                    await pause(stop, self._interval)

    async def run_pass(self, conn: psycopg.AsyncConnection[Any], newest: int | None = None) -> bool:
        """One pass; True when it was full, so that the next starts at once. `newest`:
        the store's newest position, read before the pass (the pass notes whether it
        left the tracking row there)."""
        self._caught_up = None
        async with conn.transaction():
            held = await (await conn.execute(_HOLD)).fetchone()
            if held is None:
                return False  # another trigger role is reading
            after = held[0]
            projected = await (await conn.execute(_PROJECTED)).fetchone()
            reached = projected[0] if projected and projected[1] == 2 else 0
            candidates = await self._candidates(conn)
            if not candidates:
                # No trigger anywhere: pass what the read models have reached without
                # reading it (a scheduler firing thousands of runs would decode them all).
                passed = min(reached, await settled_position(conn))
                if passed > after:
                    await conn.execute(_MOVE, (passed,))
                self._note(max(passed, after), newest)
                return False
            notifications = await read_notifications(conn, after, self._batch, precise=True)
            ready = [n for n in notifications if n.id <= reached]
            if not ready:
                if not notifications:  # nothing new (else the read models are behind)
                    self._note(after, newest)
                return False
            fired: list[Firing] = []
            for notification in ready:
                event = to_cloud_event(notification)
                pipelines = _nominated(candidates.get(event.tenant or ""), event)
                if pipelines:
                    fired += await in_thread(self._triggers.handle, tenant_event(event), pipelines)
            await conn.execute(_MOVE, (ready[-1].id,))
            self._note(ready[-1].id, newest)
        if fired and self._observe is not None:
            self._observe(fired)
        return len(ready) >= self._batch

    def _note(self, position: int, newest: int | None) -> None:
        """The pass leaves the tracking row at `position`: caught up if that is the
        newest position (an event committed since is newer than it)."""
        if newest is not None and position == newest:
            self._caught_up = newest

    async def _candidates(
        self, conn: psycopg.AsyncConnection[Any]
    ) -> dict[str, list[tuple[Target, list[EventTrigger]]]]:
        by_tenant: dict[str, list[tuple[Target, list[EventTrigger]]]] = defaultdict(list)
        rows = await (await conn.execute(_WITH_TRIGGERS)).fetchall()
        for kind, target_id, tenant_id, stored in rows:
            triggers = [
                EventTrigger(t["on"], t.get("where", {}), t.get("params", {})) for t in stored
            ]
            by_tenant[tenant_id].append(((kind, target_id), triggers))
        return by_tenant


def _nominated(
    candidates: list[tuple[Target, list[EventTrigger]]] | None, event: CloudEvent
) -> list[Target]:
    """The tenant's pipelines and deployments whose triggers, as the read models have
    them, match."""
    if not candidates or not may_trigger(event.type):
        return []
    return [
        target
        for target, triggers in candidates
        if any(t.matches(event.type, event.subject, event.data) for t in triggers)
    ]


def tenant_event(event: CloudEvent) -> TenantEvent:
    """The facts of a tenant's event that triggers are matched on."""
    assert event.tenant is not None
    return TenantEvent(
        id=event.id,
        type=event.type,
        subject=event.subject,
        tenant_id=event.tenant,
        position=event.position,
        data=event.data,
        correlation_id=event.correlationid,
        time=event.time,
    )
