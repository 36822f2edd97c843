-- Open event streams (SSE and WebSocket), for the limit on them per tenant and plan
-- (infrastructure/stream_limits.py, docs/architecture.md "Live feeds"). One row per open
-- stream, written by the API process that serves it: inserted when the stream is
-- admitted, beaten every 10 s while it lives, deleted when it ends. A row whose process
-- died stops being beaten: after 30 s it no longer counts, and the next admission in its
-- scope deletes it.
CREATE TABLE IF NOT EXISTS stream_connections (
    id uuid PRIMARY KEY,
    scope text NOT NULL,
    -- The tenant's id, or 'platform' for platform admins (their own limit, also while
    -- acting in a tenant, as for rate limits).
    kind text NOT NULL,
    -- 'sse' or 'ws'.
    actor text NOT NULL,
    -- Whose stream: user:<id> or api_key:<id>.
    opened_at timestamptz NOT NULL DEFAULT now(),
    beaten_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS stream_connections_scope ON stream_connections (scope, beaten_at);
