"""The one permission table: which role may do what. Routes declare the permission they
need; guards in the API check it against this table."""

from __future__ import annotations

from enum import StrEnum

from application.errors import NotFound, PermissionDenied
from application.principal import Principal


class Permission(StrEnum):
    TENANTS_CREATE = "tenants:create"
    TENANTS_READ = "tenants:read"
    USERS_CREATE = "users:create"
    PIPELINES_READ = "pipelines:read"
    PIPELINES_WRITE = "pipelines:write"
    PLUGINS_READ = "plugins:read"
    EVENTS_READ = "events:read"


_READ = {Permission.PIPELINES_READ, Permission.PLUGINS_READ, Permission.EVENTS_READ}

ROLE_PERMISSIONS: dict[str, frozenset[Permission]] = {
    "platform_admin": frozenset(Permission),
    "admin": frozenset(
        _READ | {Permission.PIPELINES_WRITE, Permission.USERS_CREATE, Permission.TENANTS_READ}
    ),
    "editor": frozenset(_READ | {Permission.PIPELINES_WRITE}),
    "operator": frozenset(_READ),
    "viewer": frozenset(_READ),
}


def permissions_of(principal: Principal) -> frozenset[Permission]:
    granted: set[Permission] = set()
    for role in principal.roles:
        granted |= ROLE_PERMISSIONS.get(role, frozenset())
    return frozenset(granted)


def authorize(principal: Principal, permission: Permission) -> None:
    if permission not in permissions_of(principal):
        raise PermissionDenied(f"role(s) {', '.join(sorted(principal.roles))} may not {permission}")


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
