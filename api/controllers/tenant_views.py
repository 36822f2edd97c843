"""Conversions between the tenant schemas, the application and read-model rows."""

from __future__ import annotations

from typing import Any

import msgspec

from api.schemas.tenants import QuotasIn, QuotasOut, TenantRead, TenantUpdate, TenantWritten
from application.results import Changed
from application.tenants import TenantChanges
from domain.tenant import PLAN_QUOTAS, Quotas, Tenant, TenantStatus


def changes_of(body: TenantUpdate) -> TenantChanges:
    return TenantChanges(
        name=body.name,
        description=body.description,
        labels=body.labels,
        owner=body.owner,
        plan=body.plan,
        status=None if body.status is None else TenantStatus(body.status),
        status_reason=body.status_reason,
    )


def quotas_of(body: QuotasIn) -> Quotas:
    return Quotas(
        max_pipelines=body.max_pipelines,
        max_jobs=body.max_jobs,
        max_deployments=body.max_deployments,
        max_concurrent_runs=body.max_concurrent_runs,
        max_runs_per_day=body.max_runs_per_day,
    )


def _quotas_out(quotas: Quotas) -> QuotasOut:
    return msgspec.convert(msgspec.to_builtins(quotas), QuotasOut)


def _overrides(quotas: Quotas) -> dict[str, int]:
    return {k: v for k, v in msgspec.structs.asdict(quotas).items() if v is not None}


def written(result: Changed[Tenant]) -> TenantWritten:
    tenant = result.state
    return TenantWritten(
        id=tenant.tenant_id,
        name=tenant.name,
        description=tenant.description,
        plan=tenant.plan,
        status=tenant.status,
        status_reason=tenant.status_reason,
        labels=dict(tenant.labels),
        owner=tenant.owner,
        namespaces=list(tenant.namespaces),
        quotas=_quotas_out(tenant.quotas),
        quota_overrides=_overrides(tenant.quota_overrides),
        created_at=tenant.created_on,
        updated_at=tenant.modified_on,
        version=result.version,
        position=result.position,
    )


def from_row(row: dict[str, Any]) -> TenantRead:
    overrides = Quotas(**(row["quota_overrides"] or {}))
    return TenantRead(
        id=str(row["id"]),
        name=row["name"],
        description=row["description"],
        plan=row["plan"],
        status=row["status"],
        status_reason=row["status_reason"],
        labels=dict(row["labels"] or {}),
        owner=row["owner"],
        namespaces=list(row["namespaces"]),
        quotas=_quotas_out(overrides.merged_over(PLAN_QUOTAS[row["plan"]])),
        quota_overrides=_overrides(overrides),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        version=row["version"],
    )
