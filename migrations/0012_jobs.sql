-- Read model: scheduled jobs (projections/jobs.py).
CREATE TABLE IF NOT EXISTS jobs (
    id uuid PRIMARY KEY,
    tenant_id text NOT NULL,
    name text NOT NULL,
    -- text, not uuid: JobTarget's ids are strings the aggregate does not check the form
    -- of, and a value a uuid column refused would stall the projection on that event.
    target_deployment_id text,
    target_pipeline_id text,
    target_revision integer,
    cron_expr text NOT NULL,
    timezone text NOT NULL,
    params jsonb NOT NULL,
    misfire_policy text NOT NULL,
    max_catchup integer NOT NULL,
    overlap_policy text NOT NULL,
    jitter_seconds integer NOT NULL,
    start_at timestamptz,
    end_at timestamptz,
    description text NOT NULL,
    labels jsonb NOT NULL,
    enabled boolean NOT NULL,
    disabled_reason text,
    deleted boolean NOT NULL DEFAULT false,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    version integer NOT NULL,
    position bigint NOT NULL
    -- What the scheduler did with the job is in job_schedules (0013), which no
    -- rebuild of this read model touches.
);
-- No unique (tenant_id, name): the write side's NameClaim keeps names unique, and a read
-- model does not re-decide what the write side decided (a constraint could only turn a
-- disagreement into a projection stalled on an event). Lists leave deleted jobs out, so
-- their indexes hold only the jobs not deleted.
CREATE INDEX IF NOT EXISTS jobs_tenant_created ON jobs (tenant_id, created_at, id)
    WHERE NOT deleted;
CREATE INDEX IF NOT EXISTS jobs_tenant_deployment ON jobs (tenant_id, target_deployment_id)
    WHERE NOT deleted AND target_deployment_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_tenant_pipeline ON jobs (tenant_id, target_pipeline_id)
    WHERE NOT deleted AND target_pipeline_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_labels ON jobs USING gin (labels jsonb_path_ops);

-- Jobs not deleted, per tenant (disabled ones included): the max_jobs usage.
CREATE TABLE IF NOT EXISTS job_counts (
    tenant_id text PRIMARY KEY,
    live bigint NOT NULL
);
