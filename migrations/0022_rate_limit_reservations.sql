-- The tokens the latest sync of a bucket reserved for the process that sent it
-- (infrastructure/rate_limit.py: reservations), returned to that process by the sync's
-- RETURNING; already taken off `tokens`.
ALTER TABLE rate_limit_buckets ADD COLUMN IF NOT EXISTS granted double precision NOT NULL DEFAULT 0;
