-- Read model: runs and their steps (projections/runs.py).
CREATE TABLE IF NOT EXISTS runs (
    id uuid PRIMARY KEY,
    tenant_id text NOT NULL,
    pipeline_id uuid NOT NULL,
    pipeline_name text NOT NULL,
    namespace text,
    revision integer NOT NULL,
    status text NOT NULL,
    trigger_kind text NOT NULL,
    trigger_id text,
    retry_of uuid,
    resume_from text,
    params jsonb NOT NULL,
    attempt integer NOT NULL DEFAULT 0,
    executor_id text,
    cancel_requested boolean NOT NULL DEFAULT false,
    error text,
    current_step text,
    created_by text NOT NULL,
    queued_at timestamptz NOT NULL,
    started_at timestamptz,
    finished_at timestamptz,
    duration_ms double precision,
    version integer NOT NULL,
    position bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_tenant_queued ON runs (tenant_id, queued_at, id);
CREATE INDEX IF NOT EXISTS runs_tenant_pipeline_queued ON runs (tenant_id, pipeline_id, queued_at, id);
CREATE INDEX IF NOT EXISTS runs_tenant_status ON runs (tenant_id, status, queued_at, id);
CREATE INDEX IF NOT EXISTS runs_status_started ON runs (status, started_at);

CREATE TABLE IF NOT EXISTS run_steps (
    run_id uuid NOT NULL,
    name text NOT NULL,
    ordinal integer NOT NULL,
    plugin text NOT NULL,
    depends_on text[] NOT NULL,
    status text NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    started_at timestamptz,
    finished_at timestamptz,
    error text,
    records_in bigint NOT NULL DEFAULT 0,
    records_out bigint NOT NULL DEFAULT 0,
    reused boolean NOT NULL DEFAULT false,
    PRIMARY KEY (run_id, name)
);

-- Quota counts kept with the rows: runs running per tenant, runs queued per tenant and
-- day (UTC).
CREATE TABLE IF NOT EXISTS run_counts (
    tenant_id text PRIMARY KEY,
    running bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS run_day_counts (
    tenant_id text NOT NULL,
    day date NOT NULL,
    queued bigint NOT NULL,
    PRIMARY KEY (tenant_id, day)
);

-- Executor heartbeats (infrastructure/heartbeats.py): one row per running run.
CREATE TABLE IF NOT EXISTS run_heartbeats (
    run_id uuid PRIMARY KEY,
    attempt integer NOT NULL,
    executor_id text NOT NULL,
    beat_at timestamptz NOT NULL
);

-- Step log lines (infrastructure/run_logs.py), bounded per step attempt.
CREATE TABLE IF NOT EXISTS run_logs (
    run_id uuid NOT NULL,
    step text NOT NULL,
    attempt integer NOT NULL,
    seq integer NOT NULL,
    at timestamptz NOT NULL,
    level text NOT NULL,
    message text NOT NULL,
    PRIMARY KEY (run_id, step, attempt, seq)
);

-- Pipelines: the per-run timeout of the current revision.
ALTER TABLE pipelines ADD COLUMN IF NOT EXISTS timeout double precision;
