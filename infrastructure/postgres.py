"""PostgreSQL wiring: the event store (eventsourcing over psycopg 3) and the async pool
that the read side uses."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

import msgspec
from eventsourcing.postgres import ConnectionPool as StorePool
from eventsourcing.postgres import PostgresDatastore
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from application.event_store import NornEventStore
from infrastructure.database_availability import (
    RECONNECT_TIMEOUT,
    DatabaseAvailability,
    GuardedAsyncConnectionPool,
    GuardedConnectionPool,
    GuardedPoolMixin,
)


def event_store_env(database_url: str, pool_size: int) -> dict[str, str]:
    """The eventsourcing library's configuration for our database URL."""
    info = conninfo_to_dict(database_url)
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "MAPPER_TOPIC": "infrastructure.mapper:MsgspecMapper",
        "POSTGRES_DBNAME": str(info.get("dbname") or "postgres"),
        "POSTGRES_HOST": str(info.get("host") or "127.0.0.1"),
        "POSTGRES_PORT": str(info.get("port") or "5432"),
        "POSTGRES_USER": str(info.get("user") or "postgres"),
        "POSTGRES_PASSWORD": str(info.get("password") or ""),
        "POSTGRES_POOL_SIZE": str(pool_size),
        "POSTGRES_MAX_OVERFLOW": str(pool_size),
        # No ping before each use (a round trip per query): every recorder call is
        # retried on OperationalError/InterfaceError, which replaces a dead connection.
        "POSTGRES_PRE_PING": "n",
        "POSTGRES_LOCK_TIMEOUT": "10",
        # The schema belongs to migrations/, never created implicitly.
        "CREATE_TABLE": "false",
        # Appends without the library's table lock, readers bounded by the horizon of
        # running transactions (infrastructure/recorder.py).
        "APPLICATION_RECORDER_TOPIC": "infrastructure.recorder:NornRecorder",
        "POSTGRES_ENABLE_DB_FUNCTIONS": "no",
        # Cached aggregates are fast-forwarded with one query for newer events on every
        # get (and deep-copied for commands), so a cache hit is never stale, even with
        # several processes writing: authentication re-reads session, user and tenant
        # on every request at the cost of those small queries.
        "AGGREGATE_CACHE_MAXSIZE": "10000",
        "AGGREGATE_CACHE_FASTFORWARD": "y",
    }


_LARGEST_APPEND = 10_000
"""More events than any one command appends."""


STORE_POOL_IDLE = 2
"""Connections the event store's pool keeps open when idle; it grows to NORN_DB_POOL_SIZE
and beyond under load (and shrinks back after psycopg_pool's max_idle, ten minutes).
`norn serve` runs three processes on two cores: with the library's floor of
NORN_DB_POOL_SIZE each, they held 39 backends doing nothing."""


class GuardedStorePool(GuardedPoolMixin, StorePool):  # type: ignore[type-arg]
    """The event store's pool, guarded like the others (infrastructure/database_availability.py)."""

    def __init__(self, *args: Any, availability: DatabaseAvailability, **kwargs: Any) -> None:
        self.availability = availability
        super().__init__(*args, **kwargs)


def _guard_store_pool(datastore: PostgresDatastore, availability: DatabaseAvailability) -> None:
    """Replace the pool the library built (and opened, to read the schema's types) by
    the same pool, guarded, with a short reconnect timeout."""
    built = datastore.pool
    built.close()
    datastore.pool = GuardedStorePool(
        built.conninfo,
        connection_class=built.connection_class,
        kwargs=built.kwargs,
        min_size=min(STORE_POOL_IDLE, built.min_size),
        max_size=built.max_size,
        open=False,
        configure=datastore.after_connect_func(),
        timeout=built.timeout,
        max_waiting=built.max_waiting,
        max_lifetime=built.max_lifetime,
        reconnect_timeout=RECONNECT_TIMEOUT,
        name="store",
        availability=availability,
    )


def decode_json_with_msgspec() -> None:
    """jsonb columns (a pipeline's steps, labels, a run's params, ...) decoded by msgspec
    instead of the json module, for every connection of the process: the json module took
    about 4% of a GET's CPU. Whatever is stored was encoded by msgspec or accepted by the
    API's msgspec decoder, so nothing msgspec would refuse (1e400) is there."""
    set_json_loads(msgspec.json.decode)


def open_event_store(
    database_url: str, pool_size: int = 10, availability: DatabaseAvailability | None = None
) -> NornEventStore:
    store = NornEventStore(env=event_store_env(database_url, pool_size))
    datastore = store.recorder.datastore  # type: ignore[attr-defined]
    _guard_store_pool(datastore, availability or DatabaseAvailability(database_url))

    def versions(ids: Sequence[UUID]) -> dict[UUID, int]:
        with datastore.get_connection() as conn:
            rows = conn.execute(
                "SELECT originator_id, max(originator_version) AS version FROM norn_events"
                " WHERE originator_id = ANY(%s) GROUP BY originator_id",
                (list(ids),),
            ).fetchall()
        return {row["originator_id"]: row["version"] for row in rows}

    def head(aggregate_id: UUID) -> tuple[int, int] | None:
        with datastore.get_connection() as conn:
            row = conn.execute(
                "SELECT originator_version AS version, notification_id AS position"
                " FROM norn_events WHERE originator_id = %s"
                " ORDER BY originator_version DESC LIMIT 1",
                (aggregate_id,),
            ).fetchone()
        return (row["version"], row["position"]) if row else None

    def version_at(aggregate_id: UUID, position: int) -> int | None:
        # The primary key's (originator_id, originator_version) order: no sort needed.
        with datastore.get_connection() as conn:
            row = conn.execute(
                "SELECT max(originator_version) AS version FROM norn_events"
                " WHERE originator_id = %s AND notification_id <= %s",
                (aggregate_id, position),
            ).fetchone()
        return row["version"] if row else None

    def appends(aggregate_id: UUID, version: int) -> tuple[int, int] | None:
        # The append is the transaction of the aggregate's event at `version`. An
        # append's events take their positions together (under the append lock, see
        # migrations/0010), so the rest follow that event: the range keeps to the index.
        with datastore.get_connection() as conn:
            row = conn.execute(
                "SELECT max(e.originator_version) FILTER (WHERE e.originator_id = f.originator_id)"
                " AS version, max(e.notification_id) AS position"
                " FROM norn_events f JOIN norn_events e ON e.tx_id = f.tx_id"
                " AND e.notification_id BETWEEN f.notification_id AND f.notification_id + %s"
                " WHERE f.originator_id = %s AND f.originator_version = %s",
                (_LARGEST_APPEND, aggregate_id, version),
            ).fetchone()
        if row is None or row["version"] is None:
            return None
        return row["version"], row["position"]

    store.versions = versions
    store.head = head
    store.appends = appends
    store.version_at = version_at
    return store


def create_read_pool(
    database_url: str, max_size: int = 10, availability: DatabaseAvailability | None = None
) -> AsyncConnectionPool:
    """Opened by the caller (`await pool.open()`)."""
    return GuardedAsyncConnectionPool(
        database_url,
        min_size=1,
        max_size=max_size,
        open=False,
        kwargs={"autocommit": True},
        name="read",
        availability=availability or DatabaseAvailability(database_url),
    )


def create_sync_pool(
    database_url: str, max_size: int = 4, availability: DatabaseAvailability | None = None
) -> ConnectionPool:
    """For the synchronous application services' own queries (quota usage under an
    advisory lock), beside the event store's pool. Opened here; close it on exit."""
    return GuardedConnectionPool(
        database_url,
        min_size=1,
        max_size=max_size,
        open=True,
        kwargs={"autocommit": True},
        name="sync",
        availability=availability or DatabaseAvailability(database_url),
    )
