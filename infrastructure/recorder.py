"""The event store's recorder: appends from many connections commit concurrently, and
every reader of the notification log still sees positions in an order in which no lower
position can appear later (docs/architecture.md, "Ordering without a table lock").

The eventsourcing library's recorder takes `LOCK TABLE ... IN EXCLUSIVE MODE` in every
append and holds it until the commit, so commits happen one after another, each waiting
for its own WAL flush: no group commit, and every writer queues behind the slowest. Here
an append is one statement, `norn_append_events(events)`, in its own implicit
transaction (one round trip) that:

1. takes a *session* advisory lock, so it is released as soon as the statement asks,
   not at the commit;
2. inserts the events: their notification ids come from the table's sequence, and the
   transaction's id (`pg_current_xact_id()`, assigned by this first write) is stored
   beside them as `tx_id`;
3. releases the lock; the commit (and its WAL flush, shared with other commits) follows
   outside it.

Ids and transaction ids are both taken under the lock, so a later append has both a
higher id and a higher transaction id. A reader passes only rows whose transaction is
older than the oldest one still running (`tx_id < pg_snapshot_xmin(pg_current_snapshot())`):
those transactions have all ended, so everything below such a row is already visible or
rolled back for good. Positions stay increasing integers, but are not dense: a
rolled-back append leaves a gap that never fills.

No NOTIFY: a transaction that NOTIFYs takes a database-wide lock at commit, which would
serialise commits again. Readers are woken in-process (`on_append`) and poll briefly.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.persistence import InterfaceError, Notification, OperationalError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from eventsourcing.utils import retry
from psycopg.sql import SQL, Identifier

from application.event_store import VersionTaken
from infrastructure.leadership import lock_key

log = logging.getLogger(__name__)

MAX_EVENTS_PER_APPEND = 65_535
"""A bound on one append, far above any command's (a few events)."""

HORIZON = "(SELECT pg_snapshot_xmin(pg_current_snapshot()))"
"""The oldest transaction still running: rows of older transactions are final (a
subquery, so it is computed once per statement, not per row)."""

APPEND_FUNCTION = """\
CREATE OR REPLACE FUNCTION {function}(events {event_type}[])
RETURNS SETOF bigint LANGUAGE plpgsql AS $body$
BEGIN
    -- The transaction id must be taken under the lock (see infrastructure/recorder.py).
    IF pg_current_xact_id_if_assigned() IS NOT NULL THEN
        RAISE EXCEPTION '{function} must be the first write of its transaction';
    END IF;
    PERFORM pg_advisory_lock({lock_key});
    BEGIN
        RETURN QUERY
            INSERT INTO {table} (originator_id, originator_version, topic, state, tx_id)
            SELECT e.originator_id, e.originator_version, e.topic, e.state,
                   pg_current_xact_id()
            FROM unnest(events) AS e
            RETURNING notification_id;
    EXCEPTION WHEN OTHERS THEN
        -- A session lock outlives the aborted transaction: release it here.
        PERFORM pg_advisory_unlock({lock_key});
        RAISE;
    END;
    PERFORM pg_advisory_unlock({lock_key});
END
$body$;
"""
"""The append, for a table; migrations/0010_lock_free_appends.sql holds it for
norn_events (a unit test checks that the two agree)."""


HORIZON_FUNCTION = """\
CREATE OR REPLACE FUNCTION {function}() RETURNS xid8
LANGUAGE plpgsql STABLE AS $body$
DECLARE
    snapshot pg_snapshot := pg_current_snapshot();
    idle xid8[];
BEGIN
    -- One read of the lock table: transactions of the snapshot that hold their own
    -- transaction-id lock while their backend holds no RowExclusiveLock on the table.
    WITH locks AS MATERIALIZED (
        SELECT locktype, mode, pid, database, relation, transactionid FROM pg_locks WHERE granted
    )
    SELECT array_agg(x) INTO idle
    FROM pg_snapshot_xip(snapshot) AS x
    WHERE EXISTS (
        SELECT 1 FROM locks t
        WHERE t.locktype = 'transactionid' AND t.mode = 'ExclusiveLock'
          AND t.transactionid::text::bigint = x::text::bigint % 4294967296
          AND NOT EXISTS (
              SELECT 1 FROM locks l
              WHERE l.pid = t.pid AND l.locktype = 'relation'
                AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                AND l.relation = '{table}'::regclass AND l.mode = 'RowExclusiveLock'));
    -- Only those still running after that read are passed over.
    RETURN COALESCE(
        (SELECT min(x) FROM pg_snapshot_xip(snapshot) AS x
         WHERE NOT (x = ANY(COALESCE(idle, '{{}}')) AND pg_xact_status(x) = 'in progress')),
        pg_snapshot_xmax(snapshot));
END
$body$;
"""
"""The precise horizon, for a table: the oldest running transaction that may still
append to it (docs/architecture.md §4); migrations/0021 holds it for norn_events (0010
had it without the database check: another database's table of the same OID counted).

A transaction of the snapshot is passed over only if (1) in one read of the lock table
it holds its own transaction-id lock while its backend holds no RowExclusiveLock on the
table, and (2) after that read it is still in progress. An append takes that lock before
its transaction id exists and keeps it until after it has left the running set (a
commit or abort ends the transaction in the proc array first and releases locks after),
so a transaction that was running all along and held no such lock has not appended;
having an id, it never will (an append must be its transaction's first write). Without
(2) a committing append, between ending and releasing its locks, could be passed over."""


def horizon_function_name(table: str) -> str:
    return f"{table}_horizon"


def horizon_function_sql(table: str) -> str:
    return HORIZON_FUNCTION.format(function=horizon_function_name(table), table=table)


def append_lock_key(table: str) -> int:
    """The advisory-lock key of appends to an events table (migration 0010 has the one of
    `norn_events` written out: changing the scheme would need a new migration)."""
    return lock_key("append", table)


def append_function_name(table: str) -> str:
    return f"{table}_append"


def append_function_sql(table: str, event_type: str) -> str:
    return APPEND_FUNCTION.format(
        function=append_function_name(table),
        event_type=event_type,
        table=table,
        lock_key=append_lock_key(table),
    )


class NornRecorder(PostgresApplicationRecorder):
    """The library's application recorder, with appends that commit concurrently and
    notification reads bounded by the horizon of running transactions."""

    on_append: Callable[[], None] | None = None
    """Called after every successful append, so a reader in this process (the relay)
    looks at once instead of at its next poll."""
    event_tally: Any = None
    """An infrastructure.metrics.EventTally: counts the topics of appended events."""

    def __init__(self, datastore: PostgresDatastore, *, events_table_name: str = "stored_events"):
        super().__init__(datastore, events_table_name=events_table_name)
        table = self.events_table_name
        # CREATE_TABLE=true (the library's own recorder tests): the same schema as
        # migrations/ gives norn_events.
        self.sql_create_statements[self.create_table_statement_index] = SQL(
            "CREATE TABLE IF NOT EXISTS {schema}.{table} ("
            "originator_id {originator_id_type} NOT NULL, "
            "originator_version bigint NOT NULL, "
            "topic text, "
            "state bytea, "
            "notification_id bigserial, "
            "tx_id xid8 NOT NULL DEFAULT pg_current_xact_id(), "
            "PRIMARY KEY (originator_id, originator_version))"
        ).format(
            schema=Identifier(self.datastore.schema),
            table=Identifier(table),
            originator_id_type=Identifier(self.datastore.originator_id_type),
        )
        self.sql_create_statements[self.create_insert_function_statement_index] = SQL(
            append_function_sql(table, self.stored_event_type_name)  # type: ignore[arg-type]
        )
        self.sql_create_statements.append(SQL(horizon_function_sql(table)))  # type: ignore[arg-type]
        self._horizon = f"(SELECT {horizon_function_name(table)}())"
        # Rendered once: psycopg caches the conversion of a plain string, while a
        # Composed statement is converted again on every append. The events go in
        # binary (%b): psycopg's text form of an array of composites escapes every
        # byte of every state in Python, about 8x the cost of the whole append.
        self._append_statement = (
            SQL("SELECT {function}(%b) AS notification_id")
            .format(function=Identifier(append_function_name(table)))
            .as_string(None)
        )
        self._unlock_statement = SQL("SELECT pg_advisory_unlock(%s)")
        self._lock_key = append_lock_key(table)

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        if not stored_events:
            return []
        if len(stored_events) > MAX_EVENTS_PER_APPEND:
            raise ValueError(f"at most {MAX_EVENTS_PER_APPEND} events in one append")
        rows = [
            self.construct_pg_stored_event(e.originator_id, e.originator_version, e.topic, e.state)
            for e in stored_events
        ]
        with self.datastore.get_connection() as conn:
            assert conn.autocommit  # one statement, one implicit transaction
            try:
                cur = conn.execute(self._append_statement, (rows,), prepare=True)
                ids = [row["notification_id"] for row in cur.fetchall()]
            except BaseException as error:
                # The function releases its lock on errors it can catch; a cancel
                # (statement timeout, Ctrl-C) it cannot, and a pooled session would keep
                # the lock and stall every append. Unlocking what is not held is a no-op.
                if not conn.closed and not conn.broken:
                    try:
                        conn.execute(self._unlock_statement, (self._lock_key,))
                    except Exception:
                        conn.close()
                taken = _version_taken(error)
                if taken is not None:
                    raise taken from error
                raise
        if self.event_tally is not None:
            self.event_tally.add([e.topic for e in stored_events])
        if self.on_append is not None:
            self.on_append()
        return ids

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Notification]:
        """The library's query, bounded by the precise horizon: never a row that a still
        running append could be followed by a lower one of. (Norn's own readers use
        infrastructure/notification_log.py, which takes the plain horizon first.)"""
        clauses, params = _wanted(None, start, inclusive_of_start, stop, topics)
        clauses.insert(0, SQL("tx_id < " + self._horizon))  # type: ignore[arg-type]
        params.append(limit)
        statement = SQL(
            "SELECT notification_id, originator_id, originator_version, topic, state"
            " FROM {schema}.{table} WHERE {where} ORDER BY notification_id LIMIT %s"
        ).format(
            schema=Identifier(self.datastore.schema),
            table=Identifier(self.events_table_name),
            where=SQL(" AND ").join(clauses),
        )
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, params, prepare=True)
            rows = curs.fetchall()
            if len(rows) < limit:
                last = rows[-1]["notification_id"] if rows else None
                if self._more_committed(curs, last, start, inclusive_of_start, stop, topics):
                    # A transaction older than these rows that ended while the horizon
                    # was read counts as a possible append for that one statement (its
                    # locks are gone: docs/architecture.md §4). A follower reads them on
                    # its next poll; one who asks once (the library's) would miss them.
                    curs.execute(statement, params, prepare=True)
                    rows = curs.fetchall()
            return [
                Notification(
                    id=row["notification_id"],
                    originator_id=row["originator_id"],
                    originator_version=row["originator_version"],
                    topic=row["topic"],
                    state=bytes(row["state"]),
                )
                for row in rows
            ]

    def _more_committed(
        self,
        curs: psycopg.Cursor[Any],
        last: int | None,
        start: int | None,
        inclusive_of_start: bool,
        stop: int | None,
        topics: Sequence[str],
    ) -> bool:
        """Whether committed rows the read asked for lie beyond what it returned (a new
        statement, so a new snapshot: only what has committed by now)."""
        clauses, params = _wanted(last, start, inclusive_of_start, stop, topics)
        statement = SQL("SELECT EXISTS (SELECT 1 FROM {schema}.{table} WHERE {where})").format(
            schema=Identifier(self.datastore.schema),
            table=Identifier(self.events_table_name),
            where=SQL(" AND ").join(clauses or [SQL("true")]),
        )
        row = curs.execute(statement, params).fetchone()
        return bool(row and row["exists"])


def _wanted(
    after: int | None,
    start: int | None,
    inclusive_of_start: bool,
    stop: int | None,
    topics: Sequence[str],
) -> tuple[list[SQL], list[Any]]:
    """The conditions of a read of notifications and their parameters: after `after`
    (else from `start`), up to `stop`, of `topics`."""
    clauses: list[SQL] = []
    params: list[Any] = []
    if after is not None:
        clauses.append(SQL("notification_id > %s"))
        params.append(after)
    elif start is not None:
        clauses.append(
            SQL("notification_id >= %s" if inclusive_of_start else "notification_id > %s")
        )
        params.append(start)
    if stop is not None:
        clauses.append(SQL("notification_id <= %s"))
        params.append(stop)
    if topics:
        clauses.append(SQL("topic = ANY(%s)"))
        params.append(list(topics))
    return clauses, params


_TAKEN_KEY = re.compile(r"\(originator_id, originator_version\)=\(([0-9a-fA-F-]{36}), ")


def _version_taken(error: BaseException) -> VersionTaken | None:
    """A unique violation of the events' primary key, as the VersionTaken of the
    aggregate it names (PostgreSQL's detail: "Key (originator_id, originator_version)=
    (<id>, <version>) already exists."), so the caller learns which aggregate lost."""
    if not isinstance(error, psycopg.errors.UniqueViolation):
        return None
    found = _TAKEN_KEY.search(error.diag.message_detail or "")
    if found is None:
        return None
    return VersionTaken(str(error), UUID(found.group(1)))
