-- Since when a job has been enabled, and its tenant active (application/fire_plan.py): a
-- scheduled time that fell due before then was missed, the job being off, whatever the
-- 60 s grace says (the grace is for a scheduler that is late, not for a job that was
-- off: re-enabling a job that fires every 10 s fired the six times of the last minute).
-- Rows from before this migration stay NULL until their next enable, reactivation or a
-- rebuild of the read model; until then only the grace decides, as it did.
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS enabled_at timestamptz;
ALTER TABLE tenants ADD COLUMN IF NOT EXISTS active_since timestamptz;
