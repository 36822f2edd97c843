"""Quota enforcement: a command that adds to a counted resource runs inside the tenant's
exclusive hold on that resource and is refused if it would take usage past the limit."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from application.errors import QuotaExceeded
from application.ports import Usage
from domain.tenant import Tenant

QUOTA_RESOURCES: dict[str, str] = {
    "max_pipelines": "pipelines",
    "max_jobs": "jobs",
    "max_deployments": "deployments",
    "max_concurrent_runs": "running_runs",
    "max_runs_per_day": "runs_today",
}
"""Which counted resource (projections/usage.py) each quota limits."""


@contextmanager
def within_quota(usage: Usage, tenant: Tenant, quota: str, adding: int = 1) -> Iterator[int]:
    """Hold the tenant's lock on the quota's resource; raise QuotaExceeded if `adding`
    more would pass the limit, else yield the usage before the command and keep the
    lock until the command's events are saved (leave the block after the append)."""
    limit = tenant.quota(quota)
    with usage.exclusive(tenant.tenant_id, QUOTA_RESOURCES[quota]) as used:
        if used + adding > limit:
            raise QuotaExceeded(quota, limit, used)
        yield used
