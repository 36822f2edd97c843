"""What each tenant uses of its quotas, counted from read models, exactly.

A read model is a little behind the event store. To count exactly, one statement reads
the read model's count together with the position it includes (one snapshot), and the
events after that position that change the count are added from the store.

Quotas are decided on the write side (the Usage aggregates of application/quotas.py);
the counts here only start a tenant's Usage of a resource, and show usage in the tenant
views.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from eventsourcing.utils import get_topic
from psycopg import Connection
from psycopg_pool import ConnectionPool

from application.ports import RequestFacts
from domain.deployment import DeploymentCreated, DeploymentRetired
from domain.events import NornEvent
from domain.job import JobCreated, JobDeleted
from domain.pipeline import (
    PipelineCreated,
    PipelineDeleted,
    PipelineRevised,
    PipelineRolledBack,
)
from domain.run import (
    RunCancelled,
    RunCrashed,
    RunFailed,
    RunQueued,
    RunRequeued,
    RunStarted,
    RunSucceeded,
    RunTimedOut,
)
from infrastructure.leadership import lock_key
from infrastructure.mapper import decode_state
from projections.request_facts import VERSIONS

Delta = int | Callable[[dict[str, Any]], int]


@dataclass(frozen=True)
class Counted:
    """A resource counted from a read model."""

    projection: str
    count_sql: str
    """One scalar subquery over the projection's tables (NULL counts as 0); parameter
    %(tenant)s. Keep it O(1): it runs under the lock of every command it limits."""
    deltas: Mapping[type[NornEvent], Delta]
    """How each event of the tenant changes the count: a number, or a function of the
    stored event's state."""


def _was_running(state: dict[str, Any]) -> int:
    return -1 if state.get("previous_status", "running") == "running" else 0


def _queued_today(state: dict[str, Any]) -> int:
    today = datetime.now(UTC).date().isoformat()
    return 1 if str(state.get("timestamp", "")).startswith(today) else 0


RESOURCES: dict[str, Counted] = {
    "pipelines": Counted(
        projection="pipelines",
        count_sql="SELECT live FROM pipeline_counts WHERE tenant_id = %(tenant)s",
        deltas={PipelineCreated: 1, PipelineDeleted: -1},
    ),
    "running_runs": Counted(
        projection="runs",
        count_sql="SELECT running FROM run_counts WHERE tenant_id = %(tenant)s",
        deltas={
            RunStarted: 1,
            RunSucceeded: -1,
            RunFailed: -1,
            RunTimedOut: -1,
            RunCrashed: -1,
            RunRequeued: -1,
            RunCancelled: _was_running,
        },
    ),
    "runs_today": Counted(
        projection="runs",
        count_sql="SELECT queued FROM run_day_counts WHERE tenant_id = %(tenant)s"
        " AND day = (now() AT TIME ZONE 'UTC')::date",
        deltas={RunQueued: _queued_today},
    ),
    "deployments": Counted(
        projection="deployments",
        count_sql="SELECT live FROM deployment_counts WHERE tenant_id = %(tenant)s",
        deltas={DeploymentCreated: 1, DeploymentRetired: -1},
    ),
    # Disabled jobs count: a quota on jobs bounds what can be enabled again at any time.
    "jobs": Counted(
        projection="jobs",
        count_sql="SELECT live FROM job_counts WHERE tenant_id = %(tenant)s",
        deltas={JobCreated: 1, JobDeleted: -1},
    ),
}
"""Counted resources by name (application/quotas.py names the quota of each)."""


class ReadModelUsage:
    """Holds are nested within one command (a namespace inside a quota hold): they reuse
    the thread's connection. Taking a second pooled connection while holding a lock could
    deadlock: the threads queued on that lock hold the rest of the pool."""

    def __init__(self, pool: ConnectionPool, resources: Mapping[str, Counted] = RESOURCES):
        self._pool = pool
        self._resources = resources
        self._held = threading.local()

    @contextmanager
    def _connection(self) -> Iterator[Connection[Any]]:
        held = getattr(self._held, "conn", None)
        if held is not None:
            yield held
            return
        with self._pool.connection() as conn:
            self._held.conn = conn
            try:
                yield conn
            finally:
                self._held.conn = None

    def count(self, tenant_id: str, resource: str) -> int | None:
        counted = self._resources.get(resource)
        if counted is None:
            return None
        with self._connection() as conn:
            return _count(conn, tenant_id, counted)

    def read(self, aggregate_ids: Sequence[UUID]) -> RequestFacts:
        """RequestFactsReader: the current versions of some aggregates (a request's
        session, user and tenant) in one statement."""
        with self._connection() as conn:
            rows = conn.execute(VERSIONS, (list(aggregate_ids),)).fetchall()
        return RequestFacts(versions={key: int(value) for key, value in rows})

    @contextmanager
    def namespace_hold(self, tenant_id: str, namespace: str, *, exclusive: bool) -> Iterator[None]:
        key = lock_key("namespace", f"{tenant_id}:{namespace}")
        lock, unlock = (
            ("pg_advisory_lock", "pg_advisory_unlock")
            if exclusive
            else ("pg_advisory_lock_shared", "pg_advisory_unlock_shared")
        )
        with self._connection() as conn:
            conn.execute(f"SELECT {lock}(%s)", (key,))
            try:
                yield
            finally:
                conn.execute(f"SELECT {unlock}(%s)", (key,))

    @contextmanager
    def namespaces_hold(self, places: Sequence[tuple[str, str]]) -> Iterator[None]:
        """Several namespaces held shared on one connection (not one each: a batch must
        not take the pool), taken in one order so that no two holders wait on each other."""
        keys = sorted({lock_key("namespace", f"{tenant}:{ns}") for tenant, ns in places})
        with self._connection() as conn:
            taken: list[int] = []
            try:
                for key in keys:
                    conn.execute("SELECT pg_advisory_lock_shared(%s)", (key,))
                    taken.append(key)
                yield
            finally:
                for key in taken:
                    conn.execute("SELECT pg_advisory_unlock_shared(%s)", (key,))

    def in_namespace(self, tenant_id: str, namespace: str) -> int:
        """Live pipelines placed in the namespace, exactly: a pipeline created in it, moved
        into or out of it, or deleted a moment ago counts as it is now, not as the read
        model last saw it (else a namespace could be removed under a new pipeline)."""
        with self._connection() as conn:
            rows = conn.execute(_IN_NAMESPACE, _in_namespace_params(tenant_id, namespace))
            return _namespace_count(rows.fetchall(), tenant_id, namespace)


_PLACING = (PipelineCreated, PipelineRevised, PipelineRolledBack, PipelineDeleted)
"""The pipeline events that decide its namespace (or end it)."""

# In one statement (one snapshot): the read model's pipelines in the namespace that no
# unprojected event touches, and every unprojected event that places or deletes one.
_IN_NAMESPACE = (
    "WITH tail AS (SELECT e.notification_id, e.originator_id, e.topic, e.state"
    " FROM norn_events e WHERE e.topic = ANY(%(topics)s) AND e.notification_id >"
    " COALESCE((SELECT position FROM projection_tracking WHERE name = 'pipelines'), 0))"
    " SELECT (SELECT count(*) FROM pipelines p WHERE p.tenant_id = %(tenant)s"
    " AND p.namespace = %(namespace)s AND p.id NOT IN (SELECT originator_id FROM tail)),"
    " t.originator_id, t.topic, t.state"
    " FROM (SELECT 1) AS one LEFT JOIN tail t ON true ORDER BY t.notification_id"
)


def _in_namespace_params(tenant_id: str, namespace: str) -> dict[str, Any]:
    return {
        "tenant": tenant_id,
        "namespace": namespace,
        "topics": [get_topic(cls) for cls in _PLACING],
    }


def _namespace_count(rows: list[Any], tenant_id: str, namespace: str) -> int:
    """The settled count plus the pipelines whose latest unprojected event (rows are in
    store order) leaves them live in the namespace."""
    deleted = get_topic(PipelineDeleted)
    placed: dict[Any, bool] = {}
    for _, pipeline_id, topic, state in rows:
        if topic is None:
            continue
        data = decode_state(bytes(state))
        if data.get("tenant_id") != tenant_id:
            continue
        definition = data.get("definition") or {}
        placed[pipeline_id] = topic != deleted and definition.get("namespace") == namespace
    return int(rows[0][0]) + sum(placed.values())


def _count(conn: Connection[Any], tenant_id: str, counted: Counted) -> int:
    """The read model's count plus the changes of the events it does not include yet,
    read in one statement (one snapshot, one round trip)."""
    deltas = {get_topic(cls): delta for cls, delta in counted.deltas.items()}
    rows = conn.execute(
        f"WITH base AS (SELECT COALESCE(({counted.count_sql}), 0) AS used,"
        " COALESCE((SELECT position FROM projection_tracking WHERE name = %(projection)s), 0)"
        " AS position)"
        " SELECT base.used, e.topic, e.state FROM base LEFT JOIN norn_events e"
        " ON e.notification_id > base.position AND e.topic = ANY(%(topics)s)",
        {"tenant": tenant_id, "projection": counted.projection, "topics": list(deltas)},
    ).fetchall()
    used = int(rows[0][0])
    for _, topic, raw in rows:
        if topic is None:
            continue
        state = decode_state(bytes(raw))
        if state.get("tenant_id") == tenant_id:
            delta = deltas[topic]
            used += delta if isinstance(delta, int) else delta(state)
    return used
