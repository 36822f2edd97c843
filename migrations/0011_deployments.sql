-- Read model: deployments and their releases (projections/deployments.py).
CREATE TABLE IF NOT EXISTS deployments (
    id uuid PRIMARY KEY,
    tenant_id text NOT NULL,
    pipeline_id uuid NOT NULL,
    environment text NOT NULL,
    status text NOT NULL,
    active_release integer,
    active_revision integer,
    verifying_release integer,
    verifying_revision integer,
    verifying_run_id uuid,
    verifying_deadline timestamptz,
    verifying_since timestamptz,
    release_count integer NOT NULL DEFAULT 0,
    strategy jsonb NOT NULL,
    variables jsonb NOT NULL,
    labels jsonb NOT NULL,
    description text NOT NULL,
    retired boolean NOT NULL DEFAULT false,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    version integer NOT NULL,
    position bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS deployments_tenant_created ON deployments (tenant_id, created_at, id);
CREATE INDEX IF NOT EXISTS deployments_tenant_pipeline ON deployments (tenant_id, pipeline_id);
CREATE INDEX IF NOT EXISTS deployments_tenant_environment ON deployments (tenant_id, environment);
CREATE INDEX IF NOT EXISTS deployments_tenant_status ON deployments (tenant_id, status);
CREATE INDEX IF NOT EXISTS deployments_labels ON deployments USING gin (labels jsonb_path_ops);
-- The deadline sweep's candidates: only deployments with a release verifying.
CREATE INDEX IF NOT EXISTS deployments_verifying_deadline ON deployments (verifying_deadline)
    WHERE verifying_release IS NOT NULL;

CREATE TABLE IF NOT EXISTS deployment_releases (
    deployment_id uuid NOT NULL,
    release integer NOT NULL,
    revision integer NOT NULL,
    strategy jsonb NOT NULL,
    outcome text NOT NULL,
    run_id uuid,
    deadline timestamptz,
    failure text,
    rolled_back_to integer,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (deployment_id, release)
);

-- Live (not retired) deployments per tenant: the max_deployments usage.
CREATE TABLE IF NOT EXISTS deployment_counts (
    tenant_id text PRIMARY KEY,
    live bigint NOT NULL
);

-- Runs of a deployment (trigger kind deployment): which one, in which environment, of
-- which release. NULL for every other run and for runs projected before this migration.
ALTER TABLE runs ADD COLUMN IF NOT EXISTS deployment_id uuid;
ALTER TABLE runs ADD COLUMN IF NOT EXISTS environment text;
ALTER TABLE runs ADD COLUMN IF NOT EXISTS release integer;
CREATE INDEX IF NOT EXISTS runs_tenant_deployment_queued ON runs (tenant_id, deployment_id, queued_at, id)
    WHERE deployment_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS runs_tenant_environment_queued ON runs (tenant_id, environment, queued_at, id)
    WHERE environment IS NOT NULL;
