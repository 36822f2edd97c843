-- The trigger role's candidates (infrastructure/trigger_role.py): the pipelines and
-- deployments that have triggers, read through the partial indexes of migration 0017
-- whatever the table statistics say. Until ANALYZE has seen the tables (a new install, a
-- restore, a burst of creates before autovacuum's next round) the planner takes
-- `triggers <> '[]'` to match almost every row and scans the whole table instead: five
-- times a second, 17,000 pipelines into a benchmark, that was 1.35 million rows read
-- and PostgreSQL's CPU per create up a quarter, growing with every pipeline.
CREATE OR REPLACE FUNCTION norn_trigger_targets()
RETURNS TABLE (kind text, id uuid, tenant_id text, triggers jsonb)
LANGUAGE sql STABLE
SET enable_seqscan = off
AS $$
    SELECT 'pipeline', p.id, p.tenant_id, p.triggers FROM pipelines p
    WHERE p.triggers <> '[]'::jsonb
    UNION ALL
    SELECT 'deployment', d.id, d.tenant_id, d.triggers FROM deployments d
    WHERE d.triggers <> '[]'::jsonb AND NOT d.retired
$$;
