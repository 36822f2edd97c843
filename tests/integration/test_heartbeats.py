"""Heartbeats in PostgreSQL (infrastructure/heartbeats.py): which running runs recovery
takes as lost. A run is lost when neither its current attempt's last beat nor that
attempt's start is recent; a row left by an earlier attempt says nothing about the
current one."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from infrastructure.heartbeats import PostgresHeartbeats

TIMEOUT = 60.0


@pytest.fixture
async def heartbeats(database_url: str) -> AsyncIterator[PostgresHeartbeats]:
    pool = AsyncConnectionPool(database_url, min_size=1, max_size=2, open=False)
    await pool.open()
    yield PostgresHeartbeats(pool)
    await pool.close()


def running_run(database_url: str, attempt: int, started_seconds_ago: float) -> str:
    """A row of the runs read model: running at `attempt`, started that long ago."""
    run_id = str(uuid.uuid4())
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "INSERT INTO runs (id, tenant_id, pipeline_id, pipeline_name, revision, status,"
            " trigger_kind, params, attempt, created_by, queued_at, started_at, version,"
            " position) VALUES (%s, 't', %s, 'p', 1, 'running', 'user', '{}', %s, 'u',"
            " now() - make_interval(secs => %s + 1), now() - make_interval(secs => %s), 2, 2)",
            (run_id, uuid.uuid4(), attempt, started_seconds_ago, started_seconds_ago),
        )
    return run_id


def age_beat(database_url: str, run_id: str, seconds: float) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "UPDATE run_heartbeats SET beat_at = now() - make_interval(secs => %s)"
            " WHERE run_id = %s",
            (seconds, run_id),
        )


async def test_a_run_is_stale_when_its_attempt_has_neither_beaten_nor_started_lately(
    heartbeats: PostgresHeartbeats, database_url: str
) -> None:
    beating = running_run(database_url, attempt=1, started_seconds_ago=3600)
    await heartbeats.beat(beating, 1, "executor-a")
    silent = running_run(database_url, attempt=1, started_seconds_ago=3600)
    await heartbeats.beat(silent, 1, "executor-a")
    age_beat(database_url, silent, 120)
    never_beat = running_run(database_url, attempt=1, started_seconds_ago=120)
    just_started = running_run(database_url, attempt=1, started_seconds_ago=1)

    stale = await heartbeats.stale(TIMEOUT, 100)
    assert sorted(stale) == sorted([(silent, 1), (never_beat, 1)])
    assert beating not in dict(stale) and just_started not in dict(stale)


async def test_an_earlier_attempts_old_beat_does_not_make_a_new_attempt_stale(
    heartbeats: PostgresHeartbeats, database_url: str
) -> None:
    # Attempt 1's executor died long ago; attempt 2 began a moment ago and has not
    # beaten yet (its first beat races the projection of its start).
    run_id = running_run(database_url, attempt=2, started_seconds_ago=1)
    await heartbeats.beat(run_id, 1, "executor-dead")
    age_beat(database_url, run_id, 3600)
    assert await heartbeats.stale(TIMEOUT, 100) == []


async def test_stopping_one_attempt_leaves_the_next_attempts_beat(
    heartbeats: PostgresHeartbeats, database_url: str
) -> None:
    # Attempt 2 runs a long step; the executor of attempt 1, slow rather than dead,
    # stops now and must not erase attempt 2's proof of life.
    run_id = running_run(database_url, attempt=2, started_seconds_ago=3600)
    await heartbeats.beat(run_id, 2, "executor-b")
    await heartbeats.stop(run_id, 1)
    assert await heartbeats.stale(TIMEOUT, 100) == []
    await heartbeats.stop(run_id, 2)
    assert await heartbeats.stale(TIMEOUT, 100) == [(run_id, 2)]


async def test_a_late_beat_of_a_lost_attempt_leaves_the_new_attempts_beat(
    heartbeats: PostgresHeartbeats, database_url: str
) -> None:
    # Attempt 2 has run a long step since an hour ago, beating all along; attempt 1's
    # executor, slow rather than dead, beats once more before it notices it lost the run.
    run_id = running_run(database_url, attempt=2, started_seconds_ago=3600)
    await heartbeats.beat(run_id, 2, "executor-b")
    await heartbeats.beat(run_id, 1, "executor-a")
    assert await heartbeats.stale(TIMEOUT, 100) == []
