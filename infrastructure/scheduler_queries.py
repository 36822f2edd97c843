"""The scheduler role's SQL (infrastructure/scheduler_role.py): job_schedules
(migrations 0013, 0020) beside the jobs, tenants, pipelines and deployments read models."""

from __future__ import annotations

NEW = """
INSERT INTO job_schedules (job_id, tenant_id, spec_version, cursor)
SELECT j.id, j.tenant_id, 0, j.created_at FROM jobs j
WHERE NOT j.deleted AND NOT EXISTS (SELECT 1 FROM job_schedules s WHERE s.job_id = j.id)
ON CONFLICT (job_id) DO NOTHING
"""

JOB = (
    "j.id, j.tenant_id, j.version, j.enabled, j.deleted, j.name, j.target_deployment_id,"
    " j.target_pipeline_id, j.target_revision, j.cron_expr, j.timezone, j.params,"
    " j.misfire_policy, j.max_catchup, j.overlap_policy, j.jitter_seconds, j.start_at,"
    " j.end_at, j.description, j.labels, greatest(j.enabled_at,"
    " (SELECT t.active_since FROM tenants t WHERE t.id::text = j.tenant_id)) AS active_since"
)
"""A job's definition, and since when it may fire (application/fire_plan.py FireState)."""

CHANGED = f"""
SELECT s.cursor, s.waiting_for, s.caught_up, {JOB}
FROM job_schedules s JOIN jobs j ON j.id = s.job_id
WHERE s.spec_version <> j.version LIMIT %s FOR UPDATE OF s SKIP LOCKED
"""

HELD = """
  AND s.spec_version = j.version AND j.enabled AND NOT j.deleted
  AND NOT EXISTS (
    SELECT 1 FROM tenants t WHERE t.id::text = s.tenant_id AND t.status <> 'active')
"""
"""What a pass may plan: the job's bookkeeping is up to date with its definition, the job
is enabled, and its tenant is active."""

WAITING = f"""
SELECT s.cursor, s.waiting_for, s.caught_up, s.last_run_id, {JOB}
FROM job_schedules s JOIN jobs j ON j.id = s.job_id
WHERE s.waiting_for IS NOT NULL {HELD}
ORDER BY s.waiting_for LIMIT %s FOR UPDATE OF s SKIP LOCKED
"""
"""Jobs with a fire waiting for their previous run to end (index job_schedules_waiting),
oldest wait first: planned in every pass that has room after the due jobs, as nothing
else says when that run ends."""

DUE = f"""
SELECT s.cursor, s.waiting_for, s.caught_up, s.last_run_id, {JOB}
FROM job_schedules s JOIN jobs j ON j.id = s.job_id
WHERE s.next_due <= %s AND s.waiting_for IS NULL {HELD}
ORDER BY s.next_due LIMIT %s FOR UPDATE OF s SKIP LOCKED
"""
"""The due jobs, earliest first, read in the order of index job_schedules_due: a pass of
a burst reads its batch and stops, instead of reading and sorting every due row (the
other schedulers' locked ones are passed over as they come)."""

DUE_AT = f"""
SELECT s.cursor, s.waiting_for, s.caught_up, s.last_run_id, {JOB}
FROM job_schedules s JOIN jobs j ON j.id = s.job_id
WHERE s.next_due = %s AND s.waiting_for IS NULL AND s.job_id <> ALL(%s) {HELD}
LIMIT %s FOR UPDATE OF s SKIP LOCKED
"""
"""The jobs due at exactly one time, for run_ahead (index job_schedules_due), less those
its transaction holds already (it would read them again: they are its own locks). Jobs
due before that time are left to the passes, which fire them at their time."""

CHANGED_SINCE = """
SELECT v.id FROM unnest(%b::uuid[], %b::bigint[]) AS v(id, version)
LEFT JOIN jobs j ON j.id = v.id WHERE j.id IS NULL OR j.version <> v.version
"""
"""Of the jobs run_ahead planned (id, version), those whose definition changed since."""

_UUID = "'^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'"


def _as_uuid(column: str) -> str:
    """A job's target id (text: the read model keeps what the aggregate holds) as a uuid
    the key can be looked up by, NULL unless it is a uuid in the form `uuid::text`
    writes (as comparing the texts matched)."""
    return f"(CASE WHEN {column} ~ {_UUID} THEN {column}::uuid END)"


GONE = f"""
SELECT j.id FROM jobs j WHERE j.enabled AND NOT j.deleted AND (
  (j.target_deployment_id IS NULL AND NOT EXISTS (
   SELECT 1 FROM pipelines p WHERE p.id = {_as_uuid("j.target_pipeline_id")}))
  OR EXISTS (SELECT 1 FROM deployments d
   WHERE d.id = {_as_uuid("j.target_deployment_id")} AND d.retired))
LIMIT 100
"""
"""Jobs whose target the read models say is gone: only nominated (a pipeline not projected
yet is missing too); the event store decides (JobFiring.settle_gone). Asked every
GONE_EVERY seconds while jobs are enabled: each job's target is looked up by key. Compared
as text (`p.id::text = ...`) no index applied, and every look scanned the pipelines
until it found each job's (142 ms for 300 jobs over 300,000 pipelines, 3.5 ms now)."""

JOBS_AT = "SELECT position FROM projection_tracking WHERE name = 'jobs'"
"""Where the jobs read model is: its row moves in every transaction that changes a job's
row, so while it stays put no job is new or changed."""


NEXT_DUE = "SELECT min(next_due) AS due FROM job_schedules WHERE next_due > %s"
"""The next time a job falls due (index job_schedules_due). Due rows a pass leaves (a
suspended tenant's) are in the past: they do not make the role wake again at once."""


SAVE = """
UPDATE job_schedules s SET cursor = v.cursor, waiting_for = v.waiting_for,
  caught_up = v.caught_up, next_due = v.next_due,
  last_run_id = coalesce(v.last_run_id, s.last_run_id),
  last_run = coalesce(v.last_run, s.last_run),
  fired = s.fired + v.fired, skipped = s.skipped + v.skipped, missed = s.missed + v.missed,
  refused = s.refused + v.refused, late = s.late + v.late, updated_at = now()
FROM unnest(%b::timestamptz[], %b::timestamptz[], %b::integer[], %b::timestamptz[],
            %b::uuid[], %b::timestamptz[], %b::bigint[], %b::bigint[], %b::bigint[],
            %b::bigint[], %b::bigint[], %b::uuid[])
  AS v(cursor, waiting_for, caught_up, next_due, last_run_id, last_run,
       fired, skipped, missed, refused, late, job_id)
WHERE s.job_id = v.job_id
"""
"""A pass's bookkeeping, every job's row in one statement: one array per column (the
parameters of `_saved`, column by column), rather than a statement per row. Binary
(%b): psycopg writes the text form of an array in Python, value by value (4x the time)."""
