-- The scheduler's bookkeeping of each job (infrastructure/scheduler_role.py), kept out of
-- the job's events so that firing every minute does not grow its stream, and out of the
-- `jobs` read model so that rebuilding it loses nothing: no projection writes here.
-- Each row is changed only by the scheduler holding it (SELECT ... FOR UPDATE SKIP
-- LOCKED), so several schedulers share the jobs without firing one twice; the run of a
-- (job, scheduled time) has an id derived from both, so the event store refuses a second
-- one even after a scheduler died between its append and its commit here.
CREATE TABLE IF NOT EXISTS job_schedules (
    job_id uuid PRIMARY KEY,
    tenant_id text NOT NULL,
    spec_version integer NOT NULL,
    -- The job's version `next_due` was computed at: a later version (an update, an
    -- enable) is planned afresh.
    cursor timestamptz NOT NULL,
    -- Every nominal time up to here has been dealt with: fired, skipped or missed.
    next_due timestamptz,
    -- When the job next needs a pass (its next nominal time plus its jitter); NULL: none
    -- (disabled, deleted, past end_at).
    waiting_for timestamptz,
    -- queue_one: the nominal time of the one fire waiting for the previous run to end.
    caught_up integer NOT NULL DEFAULT 0,
    -- run_all: catch-up runs already queued in a missed window whose scan goes on.
    last_run_id uuid,
    last_run timestamptz,
    -- The nominal time of the last fire.
    fired bigint NOT NULL DEFAULT 0,
    skipped bigint NOT NULL DEFAULT 0,
    missed bigint NOT NULL DEFAULT 0,
    refused bigint NOT NULL DEFAULT 0,
    late bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS job_schedules_due ON job_schedules (next_due)
    WHERE next_due IS NOT NULL;

-- A job's run records the nominal time it was fired for (its trigger's scheduled_for).
ALTER TABLE runs ADD COLUMN IF NOT EXISTS scheduled_for timestamptz;
