from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from api.schemas.common import CursorPage, Request
from domain.tenant import TenantStatus

Plan = Literal["free", "pro", "enterprise"]
Quota = Annotated[int, msgspec.Meta(ge=0, le=10_000_000)]


class TenantCreate(Request):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    description: Annotated[str, msgspec.Meta(max_length=10_000)] = ""
    plan: Plan = "free"
    labels: dict[str, str] = {}
    owner: Annotated[str, msgspec.Meta(max_length=200)] = ""


class TenantUpdate(Request):
    """PUT /tenants/{id}: the fields given change, the others stay. A tenant's own admin
    may change description and labels only."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] | None = None
    description: Annotated[str, msgspec.Meta(max_length=10_000)] | None = None
    labels: dict[str, str] | None = None
    owner: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    plan: Plan | None = None
    status: Literal["active", "suspended"] | None = None
    status_reason: Annotated[str, msgspec.Meta(max_length=1000)] = ""


class QuotasIn(Request):
    """PUT /tenants/{id}/quotas: overrides of the plan's defaults; null (or absent) = the
    plan's default."""

    max_pipelines: Quota | None = None
    max_jobs: Quota | None = None
    max_deployments: Quota | None = None
    max_concurrent_runs: Quota | None = None
    max_runs_per_day: Quota | None = None


class QuotasOut(msgspec.Struct):
    max_pipelines: int
    max_jobs: int
    max_deployments: int
    max_concurrent_runs: int
    max_runs_per_day: int


class NamespaceIn(Request):
    namespace: Annotated[str, msgspec.Meta(min_length=1, max_length=63)]


class EnvironmentPolicyIn(Request):
    """PUT /tenants/{id}/environments/{name}: omitted fields are false (all false: no
    policy)."""

    protected: bool = False
    """Only admins create, release to, roll back or retire deployments there."""
    require_verification: bool = False
    """No direct release or creation there: blue-green only."""


class EnvironmentPolicyOut(msgspec.Struct, kw_only=True):
    tenant_id: str
    environment: str
    protected: bool
    require_verification: bool
    version: int
    position: int | None
    """None when the policy was already in force (nothing recorded)."""


class NamespaceOut(msgspec.Struct):
    tenant_id: str
    namespace: str
    pipelines: int
    """Live pipelines placed in it."""


class TenantRead(msgspec.Struct, kw_only=True):
    id: str
    name: str
    description: str
    plan: str
    status: TenantStatus
    status_reason: str
    labels: dict[str, str]
    owner: str
    namespaces: list[str]
    quotas: QuotasOut
    """The limits in force: the plan's defaults with this tenant's overrides."""
    quota_overrides: dict[str, int]
    created_at: datetime
    updated_at: datetime
    version: int


class TenantWritten(TenantRead, kw_only=True):
    position: int | None


class TenantPage(CursorPage, kw_only=True):
    items: list[TenantRead]


class QuotaUsageOut(msgspec.Struct):
    limit: int
    used: int | None
    """null: a resource no read model counts (every quota's is counted now)."""


class UsageOut(msgspec.Struct):
    tenant_id: str
    plan: str
    quotas: dict[str, QuotaUsageOut]
