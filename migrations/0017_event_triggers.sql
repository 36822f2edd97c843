-- Event triggers (domain/event_trigger.py, docs/architecture.md "Event triggers").
-- The pipelines read model shows a pipeline's triggers, and the trigger role finds the
-- pipelines that have any through the partial index.
ALTER TABLE pipelines ADD COLUMN IF NOT EXISTS triggers jsonb NOT NULL DEFAULT '[]';
CREATE INDEX IF NOT EXISTS pipelines_with_triggers_idx
    ON pipelines (tenant_id) WHERE triggers <> '[]'::jsonb;

-- How far the trigger role has read the event store. One row; a pass holds it
-- (FOR UPDATE SKIP LOCKED), so two trigger roles never read the same events at once.
CREATE TABLE IF NOT EXISTS event_trigger_tracking (
    name text PRIMARY KEY,
    position bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);
-- Starts at the head: triggers react to what happens from now on, not to history.
INSERT INTO event_trigger_tracking (name, position)
    SELECT 'triggers', COALESCE(MAX(notification_id), 0) FROM norn_events
    ON CONFLICT (name) DO NOTHING;
