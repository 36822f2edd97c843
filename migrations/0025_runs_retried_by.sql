-- The latest retry of a run (norn.run.retried.v1, application/runs.py): one retry of a
-- run at a time, and the way from a failed run to its retry.
ALTER TABLE runs ADD COLUMN IF NOT EXISTS retried_by uuid;
