-- When each event was recorded, so that readiness can tell a read model that is merely
-- behind from one that is stuck (its oldest unprojected event keeps getting older).
-- now() is not volatile: PostgreSQL adds the column without rewriting the table.
ALTER TABLE norn_events ADD COLUMN IF NOT EXISTS recorded_at timestamptz NOT NULL DEFAULT now();
