"""The trigger role's candidates (infrastructure/trigger_role.py) are read through the
partial indexes even before ANALYZE has seen the tables (migration 0027)."""

from __future__ import annotations

import psycopg

from infrastructure import trigger_role
from tests.support.table_scans import seq_scans

_PIPELINES = """
INSERT INTO pipelines (id, tenant_id, name, steps, revision, version, created_by, updated_by,
  created_at, updated_at, position, triggers)
SELECT gen_random_uuid(), 't1', 'p' || i, '[]', 1, 1, 'u', 'u', now(), now(), i,
  CASE WHEN i = 7 THEN '[{"on": "norn.run.succeeded.v1"}]'::jsonb ELSE '[]'::jsonb END
FROM generate_series(1, 2000) AS i
"""


def test_the_candidates_never_scan_every_pipeline(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:  # one transaction: its own counters
        conn.execute(_PIPELINES)
        before = seq_scans(conn, "pipelines")
        # Without statistics the planner scans the table for the plain query...
        conn.execute("SELECT id FROM pipelines WHERE triggers <> '[]'::jsonb").fetchall()
        assert seq_scans(conn, "pipelines") == before + 1
        # ...and not for the role's.
        rows = conn.execute(trigger_role._WITH_TRIGGERS).fetchall()
        assert [(kind, tenant) for kind, _, tenant, _ in rows] == [("pipeline", "t1")]
        assert rows[0][3] == [{"on": "norn.run.succeeded.v1"}]
        assert seq_scans(conn, "pipelines") == before + 1
        conn.rollback()
