-- Idempotency-Key (DESIGN §5): the first successful response to a write, replayed when the
-- same principal retries with the same key. A row whose status is NULL is a request still
-- in flight; its lease lets a retry take over if the process that held it died.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    principal text NOT NULL,
    key text NOT NULL,
    fingerprint bytea NOT NULL,
    status integer,
    headers jsonb,
    body bytea,
    created_at timestamptz NOT NULL DEFAULT now(),
    lease_until timestamptz,
    PRIMARY KEY (principal, key)
);
CREATE INDEX IF NOT EXISTS idempotency_keys_created ON idempotency_keys (created_at);
