-- Webhooks (README "Webhooks", docs/architecture.md "Webhooks").

-- Read model: one row per webhook, deleted ones marked (projections/webhooks.py). No
-- secret here: it is in webhook_secrets, encrypted.
CREATE TABLE IF NOT EXISTS webhooks (
    id uuid PRIMARY KEY,
    tenant_id text NOT NULL,
    url text NOT NULL,
    events jsonb NOT NULL,
    description text NOT NULL,
    active boolean NOT NULL,
    disabled_reason text,
    deleted boolean NOT NULL DEFAULT false,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    version integer NOT NULL,
    position bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS webhooks_tenant_created ON webhooks (tenant_id, created_at, id)
    WHERE NOT deleted;

-- Signing secrets, AES-GCM under a key derived from the server's secret (`key_id` names
-- which one), the webhook id as associated data: a row copied onto another webhook does
-- not decrypt. Written before the webhook's first event (application/webhooks.py).
CREATE TABLE IF NOT EXISTS webhook_secrets (
    webhook_id uuid PRIMARY KEY,
    tenant_id text NOT NULL,
    key_id text NOT NULL,
    nonce bytea NOT NULL,
    ciphertext bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- The notifier's own tables (infrastructure/notifier_role.py); no projection writes here.
-- Its position in the event store: events up to it have their deliveries.
CREATE TABLE IF NOT EXISTS notifier_tracking (
    name text PRIMARY KEY,
    position bigint NOT NULL
);
-- No webhook existed before this migration, so no earlier event can match one: the
-- notifier starts at the head instead of reading the whole history once.
INSERT INTO notifier_tracking (name, position)
SELECT 'webhooks', coalesce(max(notification_id), 0) FROM norn_events
ON CONFLICT (name) DO NOTHING;

-- Where events go, as of the notifier's position: moved in the same transaction as it,
-- from the webhooks' own events, so an event is matched against the subscriptions as
-- they were when it happened (a read model lagging behind would miss a new webhook's
-- first events). `failures`: consecutive failed attempts (reset by a success).
CREATE TABLE IF NOT EXISTS webhook_routes (
    webhook_id uuid PRIMARY KEY,
    tenant_id text NOT NULL,
    url text NOT NULL,
    events jsonb NOT NULL,
    active boolean NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    failures integer NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS webhook_routes_tenant ON webhook_routes (tenant_id)
    WHERE active AND NOT deleted;

-- One row per (webhook, event): id = uuid5(webhook id, event id), so an event read again
-- makes no second delivery. Status: pending (no attempt yet), failed (an attempt failed;
-- another is due at next_attempt_at), delivered, dead (given up, or its webhook deleted).
-- `manual`: a ping or a redelivery, attempted also while the webhook is inactive.
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id uuid PRIMARY KEY,
    webhook_id uuid NOT NULL,
    tenant_id text NOT NULL,
    event_id text NOT NULL,
    event_type text NOT NULL,
    event_time timestamptz NOT NULL,
    position bigint,
    body bytea NOT NULL,
    status text NOT NULL DEFAULT 'pending',
    manual boolean NOT NULL DEFAULT false,
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    first_attempt_at timestamptz,
    give_up_at timestamptz,
    last_attempt_at timestamptz,
    last_status_code integer,
    last_duration_ms integer,
    last_error text,
    delivered_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);
-- Claims look for each webhook's due deliveries, oldest first (at most a few per webhook).
CREATE INDEX IF NOT EXISTS webhook_deliveries_due
    ON webhook_deliveries (webhook_id, next_attempt_at) WHERE status IN ('pending', 'failed');
CREATE INDEX IF NOT EXISTS webhook_deliveries_webhook
    ON webhook_deliveries (webhook_id, created_at DESC, id);
