"""The trigger role's candidates (infrastructure/trigger_role.py) are read through the
partial indexes even before ANALYZE has seen the tables (migration 0027)."""

from __future__ import annotations

import psycopg

from infrastructure import trigger_role

_PIPELINES = """
INSERT INTO pipelines (id, tenant_id, name, steps, revision, version, created_by, updated_by,
  created_at, updated_at, position, triggers)
SELECT gen_random_uuid(), 't1', 'p' || i, '[]', 1, 1, 'u', 'u', now(), now(), i,
  CASE WHEN i = 7 THEN '[{"on": "norn.run.succeeded.v1"}]'::jsonb ELSE '[]'::jsonb END
FROM generate_series(1, 2000) AS i
"""


def _seq_scans(conn: psycopg.Connection) -> int:
    """Sequential scans of `pipelines` in this transaction so far."""
    row = conn.execute(
        "SELECT seq_scan FROM pg_stat_xact_user_tables WHERE relname = 'pipelines'"
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_the_candidates_never_scan_every_pipeline(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:  # one transaction: its own counters
        conn.execute(_PIPELINES)
        before = _seq_scans(conn)
        # Without statistics the planner scans the table for the plain query...
        conn.execute("SELECT id FROM pipelines WHERE triggers <> '[]'::jsonb").fetchall()
        assert _seq_scans(conn) == before + 1
        # ...and not for the role's.
        rows = conn.execute(trigger_role._WITH_TRIGGERS).fetchall()
        assert [(kind, tenant) for kind, _, tenant, _ in rows] == [("pipeline", "t1")]
        assert rows[0][3] == [{"on": "norn.run.succeeded.v1"}]
        assert _seq_scans(conn) == before + 1
        conn.rollback()
