-- The precise horizon (0010) looked for appenders' RowExclusiveLock on norn_events by
-- relation OID alone, and pg_locks lists every database's locks: a transaction writing a
-- table of another database that happens to have the same OID (databases made from one
-- template create their tables with the same OIDs) held this database's readers back
-- until it ended. Only this database's locks count now.
CREATE OR REPLACE FUNCTION norn_events_horizon() RETURNS xid8
LANGUAGE plpgsql STABLE AS $body$
DECLARE
    snapshot pg_snapshot := pg_current_snapshot();
    idle xid8[];
BEGIN
    -- One read of the lock table: transactions of the snapshot that hold their own
    -- transaction-id lock while their backend holds no RowExclusiveLock on the table.
    WITH locks AS MATERIALIZED (
        SELECT locktype, mode, pid, database, relation, transactionid FROM pg_locks WHERE granted
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
                AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                AND l.relation = 'norn_events'::regclass AND l.mode = 'RowExclusiveLock'));
    -- Only those still running after that read are passed over.
    RETURN COALESCE(
        (SELECT min(x) FROM pg_snapshot_xip(snapshot) AS x
         WHERE NOT (x = ANY(COALESCE(idle, '{}')) AND pg_xact_status(x) = 'in progress')),
        pg_snapshot_xmax(snapshot));
END
$body$;
