-- The event store: the eventsourcing library's application recorder table for the
-- application named "norn" (same DDL the library would create; CREATE_TABLE is off so
-- the schema is owned here). notification_id is the global position.
CREATE TABLE IF NOT EXISTS norn_events (
    originator_id uuid NOT NULL,
    originator_version bigint NOT NULL,
    topic text,
    state bytea,
    notification_id bigserial,
    PRIMARY KEY (originator_id, originator_version)
) WITH (
    autovacuum_enabled = true,
    autovacuum_vacuum_threshold = 100000000,
    autovacuum_vacuum_scale_factor = 0.5,
    autovacuum_analyze_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.01
);
CREATE UNIQUE INDEX IF NOT EXISTS norn_events_notification_id_idx
    ON norn_events (notification_id ASC);
DO $$ BEGIN
    CREATE TYPE stored_event_uuid AS (
        originator_id uuid, originator_version bigint, topic text, state bytea);
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;

-- One row per projection: the last global position its read model includes. Updated
-- in the same transaction as the read-model rows.
CREATE TABLE IF NOT EXISTS projection_tracking (
    name text PRIMARY KEY,
    position bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);
