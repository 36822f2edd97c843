-- The latest retry of a run (norn.run.retried.v1, application/runs.py): one retry at a
-- time in a chain of retries, and the way from a failed run to its retry. Runs retried
-- before the event existed have no RunRetried, so they stay NULL even after a rebuild
-- (their retries still name them in `retry_of`), and a retry of theirs that was still
-- going on at the upgrade does not hold back another.
ALTER TABLE runs ADD COLUMN IF NOT EXISTS retried_by uuid;
