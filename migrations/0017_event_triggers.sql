-- Event triggers (domain/event_trigger.py, docs/architecture.md "Event triggers").
-- The pipelines and deployments read models show their triggers, and the trigger role
-- finds the ones that have any through the partial indexes.
ALTER TABLE pipelines ADD COLUMN IF NOT EXISTS triggers jsonb NOT NULL DEFAULT '[]';
CREATE INDEX IF NOT EXISTS pipelines_with_triggers_idx
    ON pipelines (tenant_id) WHERE triggers <> '[]'::jsonb;
ALTER TABLE deployments ADD COLUMN IF NOT EXISTS triggers jsonb NOT NULL DEFAULT '[]';
CREATE INDEX IF NOT EXISTS deployments_with_triggers_idx
    ON deployments (tenant_id) WHERE triggers <> '[]'::jsonb AND NOT retired;

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
