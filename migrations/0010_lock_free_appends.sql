-- Appends commit concurrently (no table lock held to the commit); readers stay safe by
-- passing only rows of transactions older than the oldest one still running
-- (infrastructure/recorder.py, docs/architecture.md "Ordering without a table lock").
-- tx_id: the appending transaction. Rows from before this migration were appended
-- under the table lock and are final: 0 puts them below every horizon (and adding a
-- column with a constant default does not rewrite the table).
ALTER TABLE norn_events ADD COLUMN IF NOT EXISTS tx_id xid8 NOT NULL DEFAULT '0';
ALTER TABLE norn_events ALTER COLUMN tx_id SET DEFAULT pg_current_xact_id();

CREATE OR REPLACE FUNCTION norn_events_append(events stored_event_uuid[])
RETURNS SETOF bigint LANGUAGE plpgsql AS $body$
BEGIN
    -- The transaction id must be taken under the lock (see infrastructure/recorder.py).
    IF pg_current_xact_id_if_assigned() IS NOT NULL THEN
        RAISE EXCEPTION 'norn_events_append must be the first write of its transaction';
    END IF;
    PERFORM pg_advisory_lock(7936469260204565031);
    BEGIN
        RETURN QUERY
            INSERT INTO norn_events (originator_id, originator_version, topic, state, tx_id)
            SELECT e.originator_id, e.originator_version, e.topic, e.state,
                   pg_current_xact_id()
            FROM unnest(events) AS e
            RETURNING notification_id;
    EXCEPTION WHEN OTHERS THEN
        -- A session lock outlives the aborted transaction: release it here.
        PERFORM pg_advisory_unlock(7936469260204565031);
        RAISE;
    END;
    PERFORM pg_advisory_unlock(7936469260204565031);
END
$body$;


-- The oldest running transaction that may still append events: like the horizon above,
-- but passing over transactions that run without having appended, which can no longer
-- append (norn_events_append must be the first write of its transaction). A reader held
-- up by a long transaction that is not an append (a slow read-model batch, another
-- database's work on the same server) uses it to go on. STABLE: it sees the calling
-- statement's snapshot. Why this is sound: infrastructure/recorder.py (HORIZON_FUNCTION).
CREATE OR REPLACE FUNCTION norn_events_horizon() RETURNS xid8
LANGUAGE plpgsql STABLE AS $body$
DECLARE
    snapshot pg_snapshot := pg_current_snapshot();
    idle xid8[];
BEGIN
    -- One read of the lock table: transactions of the snapshot that hold their own
    -- transaction-id lock while their backend holds no RowExclusiveLock on the table.
    WITH locks AS MATERIALIZED (
        SELECT locktype, mode, pid, relation, transactionid FROM pg_locks WHERE granted
    )
    SELECT array_agg(x) INTO idle
    FROM pg_snapshot_xip(snapshot) AS x
    WHERE EXISTS (
        SELECT 1 FROM locks t
        WHERE t.locktype = 'transactionid' AND t.mode = 'ExclusiveLock'
          AND t.transactionid::text::bigint = x::text::bigint % 4294967296
          AND NOT EXISTS (
              SELECT 1 FROM locks l
              WHERE l.pid = t.pid AND l.locktype = 'relation'
                AND l.relation = 'norn_events'::regclass AND l.mode = 'RowExclusiveLock'));
    -- Only those still running after that read are passed over.
    RETURN COALESCE(
        (SELECT min(x) FROM pg_snapshot_xip(snapshot) AS x
         WHERE NOT (x = ANY(COALESCE(idle, '{}')) AND pg_xact_status(x) = 'in progress')),
        pg_snapshot_xmax(snapshot));
END
$body$;
