-- Tenants: lifecycle, owner, namespaces and quota overrides (projections/tenants.py).
ALTER TABLE tenants ADD COLUMN IF NOT EXISTS owner text NOT NULL DEFAULT '';
ALTER TABLE tenants ADD COLUMN IF NOT EXISTS status_reason text NOT NULL DEFAULT '';
ALTER TABLE tenants ADD COLUMN IF NOT EXISTS namespaces text[] NOT NULL DEFAULT '{}';
ALTER TABLE tenants ADD COLUMN IF NOT EXISTS quota_overrides jsonb NOT NULL DEFAULT '{}';
ALTER TABLE tenants ADD COLUMN IF NOT EXISTS version integer NOT NULL DEFAULT 1;
ALTER TABLE tenants ADD COLUMN IF NOT EXISTS updated_at timestamptz;
UPDATE tenants SET updated_at = created_at WHERE updated_at IS NULL;
ALTER TABLE tenants ALTER COLUMN updated_at SET NOT NULL;
CREATE INDEX IF NOT EXISTS tenants_status_created ON tenants (status, created_at, id);
CREATE INDEX IF NOT EXISTS tenants_labels ON tenants USING gin (labels jsonb_path_ops);

-- Pipelines may be placed in one of their tenant's namespaces.
ALTER TABLE pipelines ADD COLUMN IF NOT EXISTS namespace text;
CREATE INDEX IF NOT EXISTS pipelines_tenant_namespace ON pipelines (tenant_id, namespace);

-- Read model: users (projections/users.py). Deleted users have no row.
CREATE TABLE IF NOT EXISTS users (
    id uuid PRIMARY KEY,
    tenant_id text,
    username text NOT NULL,
    roles text[] NOT NULL,
    active boolean NOT NULL,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    version integer NOT NULL,
    position bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS users_tenant_created ON users (tenant_id, created_at, id);
CREATE INDEX IF NOT EXISTS users_created ON users (created_at, id);

-- Failed logins per username and per client address (infrastructure/login_throttle.py).
-- Not a read model: bookkeeping of attempts that changed nothing.
CREATE TABLE IF NOT EXISTS login_attempts (
    key text PRIMARY KEY,
    failures integer NOT NULL,
    first_failure_at timestamptz NOT NULL,
    locked_until timestamptz
);

-- Request rate limits: one token bucket per principal (infrastructure/rate_limit.py).
CREATE TABLE IF NOT EXISTS rate_limit_buckets (
    key text PRIMARY KEY,
    tokens double precision NOT NULL,
    allowed boolean NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS rate_limit_buckets_updated ON rate_limit_buckets (updated_at);

-- Live pipelines per tenant, kept by the pipelines projection with its rows, so quota
-- checks read one row instead of counting the tenant's pipelines.
CREATE TABLE IF NOT EXISTS pipeline_counts (
    tenant_id text PRIMARY KEY,
    live bigint NOT NULL
);
