-- Read model: api_keys (projections/api_keys.py). Metadata only: no secret, no hash.
CREATE TABLE IF NOT EXISTS api_keys (
    id uuid PRIMARY KEY,
    tenant_id text NOT NULL,
    name text NOT NULL,
    prefix text NOT NULL,
    roles text[] NOT NULL,
    expires_at timestamptz,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL,
    revoked boolean NOT NULL DEFAULT false,
    revoked_at timestamptz,
    version integer NOT NULL,
    position bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS api_keys_tenant_created ON api_keys (tenant_id, created_at, id);

-- When each API key was last used (infrastructure/api_key_usage.py). Not a read model:
-- written by the API at most about once a minute per key, and not rebuilt from events.
CREATE TABLE IF NOT EXISTS api_key_usage (
    key_id uuid PRIMARY KEY,
    last_used_at timestamptz NOT NULL
);
