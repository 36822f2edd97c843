-- Tenant connections (README "Connections", docs/architecture.md "Connections").

-- Read model: one row per connection, deleted ones marked (projections/connections.py).
-- `config` is as written, its credentials secret references: the service stores no
-- other, so neither can a row.
CREATE TABLE IF NOT EXISTS connections (
    id uuid PRIMARY KEY,
    tenant_id text NOT NULL,
    name text NOT NULL,
    type text NOT NULL,
    config jsonb NOT NULL,
    description text NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    created_by text NOT NULL,
    updated_by text NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    version integer NOT NULL,
    position bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS connections_tenant_name ON connections (tenant_id, name)
    WHERE NOT deleted;
