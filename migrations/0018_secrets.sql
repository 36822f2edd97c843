-- Tenant secrets (README "Secrets", docs/architecture.md "Secrets").

-- Read model: one row per secret, deleted ones marked (projections/secrets.py). Metadata
-- only: no value, nor anything derived from one, is in an event, so none is here.
CREATE TABLE IF NOT EXISTS secrets (
    id uuid PRIMARY KEY,
    tenant_id text NOT NULL,
    name text NOT NULL,
    description text NOT NULL,
    allowed_hosts jsonb NOT NULL,
    namespaces jsonb NOT NULL,
    value_version integer NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    created_by text NOT NULL,
    updated_by text NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    version integer NOT NULL,
    position bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS secrets_tenant_name ON secrets (tenant_id, name) WHERE NOT deleted;

-- Each secret's data key, wrapped (AES-GCM) by the master key `key_id` names, the secret
-- id as associated data (infrastructure/secret_store.py). Deleting the row is deleting
-- the secret: its ciphertexts, wherever copied, can no longer be decrypted.
CREATE TABLE IF NOT EXISTS secret_keys (
    secret_id uuid PRIMARY KEY,
    tenant_id text NOT NULL,
    key_id text NOT NULL,
    nonce bytea NOT NULL,
    wrapped_key bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS secret_keys_master ON secret_keys (key_id);

-- Value versions, AES-GCM under the secret's data key, (secret id, version, value id) as
-- associated data. `value_id` is what the secret's event names: written before that
-- event, so a failed write leaves a row no event names (harmless, and unreadable once
-- the secret is deleted).
CREATE TABLE IF NOT EXISTS secret_values (
    value_id uuid PRIMARY KEY,
    secret_id uuid NOT NULL,
    version integer NOT NULL,
    nonce bytea NOT NULL,
    ciphertext bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS secret_values_secret ON secret_values (secret_id, version);

