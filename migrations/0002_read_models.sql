-- Read model: pipelines (projections/pipelines.py). Deleted pipelines have no row.
CREATE TABLE IF NOT EXISTS pipelines (
    id uuid PRIMARY KEY,
    tenant_id text NOT NULL,
    name text NOT NULL,
    description text NOT NULL DEFAULT '',
    tags text[] NOT NULL DEFAULT '{}',
    steps jsonb NOT NULL,
    revision integer NOT NULL,
    version integer NOT NULL,
    cloned_from jsonb,
    created_by text NOT NULL,
    updated_by text NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    position bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS pipelines_tenant_created ON pipelines (tenant_id, created_at, id);
CREATE INDEX IF NOT EXISTS pipelines_tenant_name ON pipelines (tenant_id, name, id);
CREATE INDEX IF NOT EXISTS pipelines_tags ON pipelines USING gin (tags);

-- Read model: tenants (projections/tenants.py).
CREATE TABLE IF NOT EXISTS tenants (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    description text NOT NULL DEFAULT '',
    plan text NOT NULL,
    status text NOT NULL,
    labels jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL,
    position bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS tenants_created ON tenants (created_at, id);
