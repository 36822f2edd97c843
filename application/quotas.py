"""Quota enforcement: a command that adds to a counted resource is refused if it would
take the tenant's usage past the limit.

Near the limit, the check and the command's append run inside the tenant's exclusive
hold on the resource, so concurrent commands cannot both take the last unit. Far from
it (more than HEADROOM below), the hold is skipped: usage could only pass the limit if
more than HEADROOM commands of that tenant were in flight at once, and skipping keeps a
busy tenant's commands from queueing behind one lock."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
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

HEADROOM = 256


@contextmanager
def within_quota(
    usage: Usage,
    tenant: Tenant,
    quota: str,
    adding: int = 1,
    bounds: Mapping[str, int] | None = None,
) -> Iterator[int]:
    """Raise QuotaExceeded if `adding` more would pass the limit, else yield the usage
    before the command (far from the limit, an upper bound of it). Run the command's
    append inside the block: near the limit it holds the tenant's lock on the resource
    until the events are saved. `bounds`: upper bounds read with the request's
    authentication (Principal.usage_bounds), which spare the query here."""
    limit = tenant.quota(quota)
    resource = QUOTA_RESOURCES[quota]
    # Far below the limit an upper bound will do (read with authentication, or one cheap
    # query); near it, the exact count under the lock.
    at_most = bounds.get(resource) if bounds is not None else None
    if at_most is None:
        at_most = usage.at_most(tenant.tenant_id, resource)
    if at_most + adding <= limit - HEADROOM:
        yield at_most
        return
    with usage.exclusive(tenant.tenant_id, resource) as used:
        if used + adding > limit:
            raise QuotaExceeded(quota, limit, used)
        yield used
