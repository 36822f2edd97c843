-- GET /pipelines?sort=updated_at pages by keyset on (updated_at, id) within a tenant;
-- without this index every page would sort all of the tenant's pipelines.
CREATE INDEX IF NOT EXISTS pipelines_tenant_updated ON pipelines (tenant_id, updated_at, id);
