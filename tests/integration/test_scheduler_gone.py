"""The scheduler's look for jobs whose target is gone (infrastructure/scheduler_queries.py
GONE): which jobs it names, and that it looks each target up by key instead of scanning
the pipelines, which it did every five seconds while any job was enabled."""

from __future__ import annotations

import uuid

import psycopg

from infrastructure import scheduler_queries as q
from tests.support.table_scans import seq_scans

_PIPELINES = """
INSERT INTO pipelines (id, tenant_id, name, steps, revision, version, created_by, updated_by,
  created_at, updated_at, position)
SELECT gen_random_uuid(), 't1', 'p' || i, '[]', 1, 1, 'u', 'u', now(), now(), i
FROM generate_series(1, 20000) AS i
"""

_DEPLOYMENT = """
INSERT INTO deployments (id, tenant_id, pipeline_id, environment, status, strategy, variables,
  labels, description, retired, created_by, created_at, updated_at, version, position)
VALUES (%s, 't1', gen_random_uuid(), 'prod', 'active', '{}', '{}', '{}', '', %s, 'u', now(),
  now(), 1, 1)
"""

_JOB = """
INSERT INTO jobs (id, tenant_id, name, target_deployment_id, target_pipeline_id, cron_expr,
  timezone, params, misfire_policy, max_catchup, overlap_policy, jitter_seconds, description,
  labels, enabled, deleted, created_by, created_at, updated_at, version, position)
VALUES (%s, 't1', %s, %s, %s, '0 3 * * *', 'UTC', '{}', 'skip', 0, 'allow', 0, '', '{}', %s,
  %s, 'u', now(), now(), 1, 1)
"""


def test_gone_names_the_jobs_whose_target_is_gone_and_scans_no_pipelines(
    database_url: str,
) -> None:
    with psycopg.connect(database_url) as conn:  # one transaction: its own counters
        conn.execute(_PIPELINES)
        row = conn.execute("SELECT id FROM pipelines ORDER BY position DESC LIMIT 1").fetchone()
        assert row is not None
        pipeline = str(row[0])
        retired, active = uuid.uuid4(), uuid.uuid4()
        conn.execute(_DEPLOYMENT, (retired, True))
        conn.execute(_DEPLOYMENT, (active, False))
        jobs: dict[str, uuid.UUID] = {}

        def job(
            name: str,
            *,
            pipeline_id: str | None = None,
            deployment_id: uuid.UUID | None = None,
            enabled: bool = True,
            deleted: bool = False,
        ) -> None:
            jobs[name] = uuid.uuid4()
            target = None if deployment_id is None else str(deployment_id)
            conn.execute(_JOB, (jobs[name], name, target, pipeline_id, enabled, deleted))

        job("pipeline there", pipeline_id=pipeline)
        job("pipeline gone", pipeline_id=str(uuid.uuid4()))
        job("not an id", pipeline_id="not-a-uuid")
        job("upper case", pipeline_id=pipeline.upper())  # no pipeline's id reads so
        job("deployment retired", deployment_id=retired)
        job("deployment active", deployment_id=active)
        job("disabled", pipeline_id=str(uuid.uuid4()), enabled=False)
        job("deleted", pipeline_id=str(uuid.uuid4()), deleted=True)
        # As autovacuum would have: with statistics the planner weighs a lookup per job
        # against hashing every pipeline, which it rightly prefers where the pipelines
        # are few (at 2,000 here) or the jobs many.
        conn.execute("ANALYZE pipelines, jobs, deployments")
        before = seq_scans(conn, "pipelines")

        named = {r[0] for r in conn.execute(q.GONE).fetchall()}

        assert named == {
            jobs[name]
            for name in ("pipeline gone", "not an id", "upper case", "deployment retired")
        }
        assert seq_scans(conn, "pipelines") == before
        conn.rollback()
