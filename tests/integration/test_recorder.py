"""The event store's recorder (infrastructure/recorder.py) on real PostgreSQL: the
eventsourcing library's own test cases for an application recorder, and ours for the
guarantee that replaces the table lock: no reader ever passes a position below which a
transaction still running can commit."""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterator
from importlib import resources
from typing import Any

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent
from eventsourcing.postgres import PostgresDatastore
from eventsourcing.tests.persistence import (
    ApplicationRecorderTestCase,
    NonInterleavingNotificationIDsBaseCase,
)
from psycopg.conninfo import conninfo_to_dict

from application.event_store import VersionTaken
from infrastructure.notification_log import PRECISE_HORIZON
from infrastructure.recorder import (
    HORIZON,
    NornRecorder,
    append_function_sql,
    append_lock_key,
    horizon_function_sql,
)


def _datastore(database_url: str, pool_size: int = 4) -> PostgresDatastore:
    info = conninfo_to_dict(database_url)
    return PostgresDatastore(
        dbname=str(info["dbname"]),
        host=str(info.get("host") or "127.0.0.1"),
        port=str(info.get("port") or "5432"),
        user=str(info.get("user") or "postgres"),
        password=str(info.get("password") or ""),
        pool_size=pool_size,
        max_overflow=pool_size,
    )


class _OnTestDatabase:
    """Mixin: each test gets a fresh database and a recorder over a table of its own
    (`stored_events`, created by the recorder as the library's tests expect)."""

    datastore: PostgresDatastore | None = None

    @pytest.fixture(autouse=True)
    def _database(self, database_url: str) -> Iterator[None]:
        self.database_url = database_url
        yield
        if self.datastore is not None:
            self.datastore.close()
            self.datastore = None

    def create_recorder(self) -> NornRecorder:
        if self.datastore is None:
            self.datastore = _datastore(self.database_url, pool_size=12)
        recorder = NornRecorder(self.datastore, events_table_name="stored_events")
        recorder.create_table()
        return recorder


class TestLibraryApplicationRecorderCases(_OnTestDatabase, ApplicationRecorderTestCase):
    """The library's application-recorder contract: insert/select, conflicts, the
    notification log's queries, concurrent writers with readers."""

    def test_concurrent_throughput(self) -> None:
        pytest.skip("a timing printout, no assertion; bench/ measures throughput")

    def test_performance(self) -> None:
        pytest.skip("a timing printout, no assertion; bench/ measures throughput")


class TestLibraryNonInterleavingIds(_OnTestDatabase, NonInterleavingNotificationIDsBaseCase):
    """Two concurrent appends of 1,000 events each get two separate blocks of ids."""

    insert_num = 1000


def _events(n: int = 1, originator: uuid.UUID | None = None) -> list[StoredEvent]:
    originator = originator or uuid.uuid4()
    return [StoredEvent(originator, v, "topic", b"{}") for v in range(1, n + 1)]


@pytest.fixture
def recorder(database_url: str) -> Iterator[NornRecorder]:
    datastore = _datastore(database_url, pool_size=20)
    recorder = NornRecorder(datastore, events_table_name="norn_events")
    yield recorder
    datastore.close()


def test_migration_holds_the_recorders_append_function() -> None:
    """migrations/ creates norn_events' append function; the recorder creates the same
    for any other table. Both must be the same code."""
    migration = (resources.files("migrations") / "0010_lock_free_appends.sql").read_text()

    def normal(text: str) -> str:
        return re.sub(r"\s+", " ", text).strip()

    assert normal(append_function_sql("norn_events", "stored_event_uuid")) in normal(migration)
    latest = (resources.files("migrations") / "0021_horizon_of_this_database.sql").read_text()
    assert normal(horizon_function_sql("norn_events")) in normal(latest)


def test_appends_commit_without_a_table_lock(recorder: NornRecorder, database_url: str) -> None:
    """An append is not held up by another transaction that appended and has not
    committed yet (the library's table lock would block it until that commit)."""
    with psycopg.connect(database_url) as open_tx:
        _append_row(open_tx)
        started = time.monotonic()
        ids = recorder.insert_events(_events())
        assert ids and time.monotonic() - started < 5
        open_tx.rollback()


def test_conflict_releases_the_append_lock(recorder: NornRecorder, database_url: str) -> None:
    originator = uuid.uuid4()
    recorder.insert_events(_events(1, originator))
    with pytest.raises(IntegrityError):
        recorder.insert_events(_events(1, originator))
    with psycopg.connect(database_url, autocommit=True) as conn:
        held = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
            " AND ((classid::bigint << 32) | objid::bigint) = %s",
            (append_lock_key("norn_events") & 0xFFFFFFFFFFFFFFFF,),
        ).fetchone()
    assert held == (0,)
    assert recorder.insert_events(_events())  # and appends go on


def test_a_refused_append_names_the_aggregate_whose_version_was_taken(
    recorder: NornRecorder,
) -> None:
    """Of an append of several aggregates, the store says which one lost the race, so
    the caller need not ask which of the others exist (application/job_firing.py)."""
    first, second = uuid.uuid4(), uuid.uuid4()
    recorder.insert_events(_events(1, second))
    with pytest.raises(VersionTaken) as refused:
        recorder.insert_events([*_events(1, first), *_events(1, second)])
    assert refused.value.originator_id == second
    assert isinstance(refused.value, IntegrityError)  # what the library's callers catch


def test_append_must_be_the_first_write_of_its_transaction(database_url: str) -> None:
    """The ordering argument needs the transaction id taken under the lock."""
    with psycopg.connect(database_url) as conn:
        conn.execute("CREATE TEMP TABLE scratch (x int)")
        conn.execute("INSERT INTO scratch VALUES (1)")
        with pytest.raises(psycopg.errors.RaiseException, match="first write"):
            _append_row(conn)


def passed_through(recorder: NornRecorder, last: int) -> list[int]:
    """The positions a reader passes, read again until `last` is among them: a read can
    stop short while any other transaction on the server ends (docs/architecture.md §4),
    and another session's tests on a shared server made this test fail that way."""
    deadline = time.monotonic() + 10
    while True:
        read = [n.id for n in recorder.select_notifications(start=None, limit=10)]
        if last in read or time.monotonic() > deadline:
            return read
        time.sleep(0.01)


def test_reader_never_passes_a_lower_position_that_commits_later(
    recorder: NornRecorder, database_url: str
) -> None:
    """Out of order on purpose: A appends (lower id) and stays open, B appends (higher
    id) and commits. A reader must not see B until A has ended, else it would move past
    A's position and never see A's event."""
    with psycopg.connect(database_url) as a:
        _append_row(a)
        (b_id,) = recorder.insert_events(_events())
        assert recorder.max_notification_id() == b_id  # committed, visible...
        assert recorder.select_notifications(start=None, limit=10) == []  # ...not passed
        a.commit()
    read = passed_through(recorder, b_id)
    assert read == sorted(read) and read[-1] == b_id and len(read) == 2


def test_a_read_held_back_for_one_statement_is_read_again(
    recorder: NornRecorder, database_url: str
) -> None:
    """A transaction older than the rows that ends while the precise horizon is taken
    holds that one statement back (its locks are gone: it may have been an append). The
    library's readers ask once: the recorder reads again when committed rows lie beyond
    what it returned. Here the horizon is made to hold the first statement back."""
    ids = recorder.insert_events(_events(3))
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE SEQUENCE horizon_taken")
    recorder._horizon = (  # type: ignore[attr-defined]
        "(SELECT CASE WHEN nextval('horizon_taken') = 1 THEN '1'::xid8"
        f" ELSE {recorder._horizon} END)"  # type: ignore[attr-defined]
    )
    assert [n.id for n in recorder.select_notifications(start=None, limit=10)] == ids
    # Nothing committed beyond what it returned: no second read (the horizon was taken
    # twice for the first call, once for this one).
    assert [n.id for n in recorder.select_notifications(start=ids[-1], limit=10)] == ids[-1:]
    with psycopg.connect(database_url, autocommit=True) as conn:
        assert conn.execute("SELECT last_value FROM horizon_taken").fetchone() == (3,)


def test_a_rolled_back_append_leaves_a_gap_that_never_fills(
    recorder: NornRecorder, database_url: str
) -> None:
    (first,) = recorder.insert_events(_events())
    with psycopg.connect(database_url) as a:
        _append_row(a)
        a.rollback()
    (third,) = recorder.insert_events(_events())
    assert third > first + 1
    assert passed_through(recorder, third) == [first, third]


def test_hammer_no_reader_skips_a_position(recorder: NornRecorder, database_url: str) -> None:
    """16 connections append as fast as they can, some appends roll back on purpose and
    some hold their transaction open a while, while another transaction that is not an
    append stays open; readers follow the log the way the relay does (after the last
    position read, below the plain or the precise horizon). Every reader must end up with
    exactly the committed events, in increasing order, none skipped, none twice."""
    writers, per_writer = 16, 60
    committed: set[int] = set()
    lock = threading.Lock()
    errors: list[BaseException] = []
    done = threading.Event()

    def write(w: int) -> None:
        try:
            with psycopg.connect(database_url) as conn:
                for i in range(per_writer):
                    n = 1 + (i % 3)
                    rows = [(uuid.uuid4(), 1, "topic", b"{}") for _ in range(n)]
                    cur = conn.execute(
                        "SELECT norn_events_append(%s::stored_event_uuid[])", (rows,)
                    )
                    ids = [r[0] for r in cur.fetchall()]
                    if (w + i) % 7 == 0:
                        time.sleep(0.005)  # commit late: later ids commit before these
                    if (w + i) % 11 == 0:
                        conn.rollback()
                        continue
                    conn.commit()
                    with lock:
                        committed.update(ids)
        except BaseException as error:
            errors.append(error)

    last: list[int] = []  # the highest committed position, once every writer is done

    def follow(seen: list[int], horizon: str) -> None:
        try:
            with psycopg.connect(database_url, autocommit=True) as conn:
                position = 0
                deadline = time.monotonic() + 60
                # Until it has read past the last commit: after the writers are done, a
                # read can still stop short while any other transaction on the server
                # ends, so an empty read does not mean "everything read".
                while not (done.is_set() and position >= last[0]):
                    assert time.monotonic() < deadline, f"stuck at {position}"
                    rows = conn.execute(
                        "SELECT notification_id FROM norn_events WHERE notification_id > %s"
                        f" AND tx_id < {horizon} ORDER BY notification_id LIMIT 50",
                        (position,),
                    ).fetchall()
                    for (notification_id,) in rows:
                        seen.append(notification_id)
                        position = notification_id
        except BaseException as error:
            errors.append(error)

    # Readers with the plain and with the precise horizon, two of each.
    horizons = [HORIZON, PRECISE_HORIZON, HORIZON, PRECISE_HORIZON]
    seen_by: list[list[int]] = [[] for _ in horizons]
    readers = [
        threading.Thread(target=follow, args=(seen, horizon))
        for seen, horizon in zip(seen_by, horizons, strict=True)
    ]
    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    # A long transaction that is not an append holds the plain horizon back the whole
    # time: the precise readers must look past it, the plain ones wait for its end.
    with psycopg.connect(database_url) as blocker:
        blocker.execute("CREATE TEMP TABLE scratch (x int)")
        blocker.execute("INSERT INTO scratch VALUES (1)")
        for t in readers + threads:
            t.start()
        for t in threads:
            t.join()
        blocker.rollback()
    last.append(max(committed))
    done.set()
    for t in readers:
        t.join()
    assert not errors, errors
    for seen in seen_by:
        assert seen == sorted(committed), (len(seen), len(committed))


def _append_row(conn: Any) -> None:
    conn.execute(
        "SELECT norn_events_append(ARRAY[(%s, 1, 'topic', '{}'::bytea)]::stored_event_uuid[])",
        (uuid.uuid4(),),
    )
