"""The one permission table: which role may do what. Routes declare the permission they
need; guards in the API check it against this table."""

from __future__ import annotations

from enum import StrEnum

from application.errors import NotFound, PermissionDenied
from application.principal import Principal


class Permission(StrEnum):
    TENANTS_MANAGE = "tenants:manage"
    """Create, list, suspend, delete any tenant; set plans and quotas (platform only)."""
    TENANTS_READ = "tenants:read"
    """Read one's own tenant, its quotas and usage."""
    TENANTS_UPDATE = "tenants:update"
    """Change one's own tenant's description, labels and namespaces."""
    USERS_READ = "users:read"
    USERS_WRITE = "users:write"
    API_KEYS_READ = "api_keys:read"
    API_KEYS_WRITE = "api_keys:write"
    PIPELINES_READ = "pipelines:read"
    PIPELINES_WRITE = "pipelines:write"
    DEPLOYMENTS_READ = "deployments:read"
    DEPLOYMENTS_WRITE = "deployments:write"
    JOBS_READ = "jobs:read"
    JOBS_WRITE = "jobs:write"
    JOBS_TOGGLE = "jobs:toggle"
    """Enable or disable a scheduled job."""
    RUNS_READ = "runs:read"
    RUNS_TRIGGER = "runs:trigger"
    RUNS_CANCEL = "runs:cancel"
    PLUGINS_READ = "plugins:read"
    EVENTS_READ = "events:read"


_VIEWER = frozenset(
    {
        Permission.PIPELINES_READ,
        Permission.DEPLOYMENTS_READ,
        Permission.JOBS_READ,
        Permission.RUNS_READ,
        Permission.PLUGINS_READ,
        Permission.EVENTS_READ,
    }
)
_OPERATOR = _VIEWER | {Permission.RUNS_TRIGGER, Permission.RUNS_CANCEL, Permission.JOBS_TOGGLE}
_EDITOR = _OPERATOR | {
    Permission.PIPELINES_WRITE,
    Permission.DEPLOYMENTS_WRITE,
    Permission.JOBS_WRITE,
}
_ADMIN = _EDITOR | {
    Permission.TENANTS_READ,
    Permission.TENANTS_UPDATE,
    Permission.USERS_READ,
    Permission.USERS_WRITE,
    Permission.API_KEYS_READ,
    Permission.API_KEYS_WRITE,
}

TENANT_WRITES = frozenset(
    {
        Permission.TENANTS_UPDATE,
        Permission.USERS_WRITE,
        Permission.API_KEYS_WRITE,
        Permission.PIPELINES_WRITE,
        Permission.DEPLOYMENTS_WRITE,
        Permission.JOBS_WRITE,
        Permission.JOBS_TOGGLE,
        Permission.RUNS_TRIGGER,
        Permission.RUNS_CANCEL,
    }
)
"""Permissions that change a tenant's resources: refused while the tenant is not active
(suspended: read-only; deleted: kept for audit only)."""

ROLE_PERMISSIONS: dict[str, frozenset[Permission]] = {
    "platform_admin": frozenset(Permission),
    "admin": frozenset(_ADMIN),
    "editor": frozenset(_EDITOR),
    "operator": frozenset(_OPERATOR),
    "viewer": _VIEWER,
}
"""Each role includes the ones below it: viewer < operator < editor < admin."""


def permissions_of(principal: Principal) -> frozenset[Permission]:
    granted: set[Permission] = set()
    for role in principal.roles:
        granted |= ROLE_PERMISSIONS.get(role, frozenset())
    return frozenset(granted)


def authorize(principal: Principal, permission: Permission) -> None:
    if permission not in permissions_of(principal):
        raise PermissionDenied(f"role(s) {', '.join(sorted(principal.roles))} may not {permission}")
    if permission in TENANT_WRITES and not _manages_tenants(principal, permission):
        require_writable_tenant(principal)


def _manages_tenants(principal: Principal, permission: Permission) -> bool:
    """A platform admin changing a tenant itself (e.g. reactivating it) is the platform's
    business, whether or not it also acts inside that tenant with X-Tenant-ID."""
    return permission is Permission.TENANTS_UPDATE and principal.is_platform_admin


def require_writable_tenant(principal: Principal) -> None:
    """Refuse changes inside a suspended or deleted tenant, whoever asks."""
    status = principal.tenant_status
    if status is not None and status != "active":
        raise PermissionDenied(
            f"tenant {principal.tenant_id} is {status}: its resources can be read but not changed"
        )


def require_tenant(principal: Principal) -> str:
    """The tenant a tenant-scoped command acts in."""
    if principal.tenant_id is None:
        raise PermissionDenied(
            "this action is tenant-scoped: a platform admin must name the tenant "
            "with the X-Tenant-ID header"
        )
    return principal.tenant_id


def check_owner(principal: Principal, kind: str, ident: object, owner_tenant: str | None) -> None:
    """Another tenant's resource is reported as missing, never as forbidden."""
    if principal.is_platform_admin and principal.tenant_id is None:
        return
    if owner_tenant != principal.tenant_id:
        raise NotFound(kind, ident)
