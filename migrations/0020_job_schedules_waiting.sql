-- The scheduler's passes (infrastructure/scheduler_role.py) read the due jobs in
-- next_due order through job_schedules_due, and the jobs with a fire waiting for their
-- previous run (queue_one) through this index: before, one query asked for both with an
-- OR that no index answers, so every pass of a burst read and sorted every job's row.
CREATE INDEX IF NOT EXISTS job_schedules_waiting ON job_schedules (job_id)
    WHERE waiting_for IS NOT NULL;
