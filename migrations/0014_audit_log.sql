-- Read model: the audit trail (projections/audit_log.py). One row per event of the store,
-- whatever its type, keyed by its position, with the columns the audit filters use; the
-- event itself stays in norn_events and is joined on the position when read, so the rows
-- are small and nothing is stored twice. norn_events has no tenant column, which is why
-- a tenant's events cannot be listed without this table.
CREATE TABLE IF NOT EXISTS audit_log (
    position bigint PRIMARY KEY,
    -- NULL: an event of no tenant (platform admins' own users and sessions).
    tenant_id text,
    aggregate_type text NOT NULL,
    type text NOT NULL,
    originator_id uuid NOT NULL,
    version integer NOT NULL,
    actor text NOT NULL,
    correlation_id text NOT NULL,
    causation_id text,
    -- The event's own time (its CloudEvent `time`), not when it was recorded.
    time timestamptz NOT NULL
);
-- Every listing is in position order within a tenant (or across tenants for a platform
-- admin: the primary key), narrowed by resource, actor or time.
CREATE INDEX IF NOT EXISTS audit_log_tenant ON audit_log (tenant_id, position);
CREATE INDEX IF NOT EXISTS audit_log_originator ON audit_log (originator_id, position);
CREATE INDEX IF NOT EXISTS audit_log_actor ON audit_log (actor, position);
CREATE INDEX IF NOT EXISTS audit_log_tenant_time ON audit_log (tenant_id, time);
CREATE INDEX IF NOT EXISTS audit_log_time ON audit_log (time);
