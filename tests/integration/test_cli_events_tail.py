"""`norn events tail` against a real PostgreSQL: it ends quietly when its reader goes
away (`| head`), and rides out a lost database connection, saying so."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from application.event_store import NornEventStore
from tests.conftest import seed_tenant

NORN = str(Path(sys.executable).parent / "norn")


@pytest.fixture
def tail(database_url: str, tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NORN_")}
    env.update(NORN_DATABASE_URL=database_url, NORN_DATA_DIR=str(tmp_path))
    process = subprocess.Popen(  # noqa: S603
        [NORN, "events", "tail", "--from", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def _new_tenant(event_store: NornEventStore) -> None:
    seed_tenant(event_store, uuid.uuid4(), f"t-{uuid.uuid4().hex[:8]}")


def test_a_reader_that_goes_away_ends_the_tail_quietly(
    event_store: NornEventStore, tail: subprocess.Popen[str]
) -> None:
    _new_tenant(event_store)
    assert tail.stdout is not None and tail.stderr is not None
    assert '"type"' in tail.stdout.readline()
    tail.stdout.close()  # like `| head -1` exiting
    _new_tenant(event_store)  # the next line has nowhere to go

    assert tail.wait(timeout=30) == 0
    err = tail.stderr.read()
    assert "BrokenPipeError" not in err and "Traceback" not in err


def test_a_lost_database_connection_is_said_and_the_tail_goes_on(
    database_url: str,
    pg_admin_url: str,
    event_store: NornEventStore,
    tail: subprocess.Popen[str],
) -> None:
    _new_tenant(event_store)
    assert tail.stdout is not None and tail.stderr is not None
    first = tail.stdout.readline()
    database = conninfo_to_dict(database_url)["dbname"]
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        killed = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = %s AND application_name = 'norn events tail'",
            (database,),
        ).fetchone()
    assert killed and killed[0] >= 1
    _new_tenant(event_store)

    second = tail.stdout.readline()  # printed after reconnecting
    assert second and second != first
    tail.terminate()
    tail.wait(timeout=30)
    err = tail.stderr.read()
    assert "norn: lost the database connection" in err
    assert "reconnecting" in err and "norn: reconnected" in err
    assert "Traceback" not in err
