"""Every authorisation rule, decided here and nowhere else:

- what a role may do: the permission table. Each route declares the permission it needs
  and the API's guard asks `authorize` once per request (a route that declares none is
  refused); services do not ask again;
- which resources a principal sees (`sees`, `sees_tenant`, `is_self`): the command path
  (application/commands.py) asks when it loads an aggregate, and one it may not see is
  NotFound, never a 403 that would reveal it exists;
- what depends on the command's content (which fields a tenant admin may change, which
  roles one may grant, who may change whose password): the use case asks the rule below
  that names it, since only it has the facts."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from application.errors import PermissionDenied
from application.principal import Principal
from domain.tenant import SELF_SERVICE_FIELDS, EnvironmentPolicy, TenantStatus
from domain.user import PLATFORM_ADMIN


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
    WEBHOOKS_READ = "webhooks:read"
    """Webhook subscriptions and their deliveries (README "Webhooks")."""
    WEBHOOKS_WRITE = "webhooks:write"
    """Create, change, delete, ping webhooks; redeliver."""
    SECRETS_READ = "secrets:read"
    """Secrets' metadata (README "Secrets"); no route ever answers a value."""
    SECRETS_WRITE = "secrets:write"
    """Create, change (a new value version, metadata) and delete secrets."""
    CONNECTIONS_READ = "connections:read"
    """Connections and their configs (README "Connections"): secret references only."""
    CONNECTIONS_WRITE = "connections:write"
    """Create, change and delete connections."""
    PLUGINS_READ = "plugins:read"
    EVENTS_READ = "events:read"
    PLATFORM_HEALTH = "platform:health"
    """Each component's state, lag and version (GET /health/detailed; platform only)."""


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
    Permission.SECRETS_READ,
    Permission.CONNECTIONS_READ,
}
_ADMIN = _EDITOR | {
    Permission.TENANTS_READ,
    Permission.TENANTS_UPDATE,
    Permission.USERS_READ,
    Permission.USERS_WRITE,
    Permission.API_KEYS_READ,
    Permission.API_KEYS_WRITE,
    Permission.WEBHOOKS_READ,
    Permission.WEBHOOKS_WRITE,
    Permission.SECRETS_WRITE,
    Permission.CONNECTIONS_WRITE,
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
        Permission.WEBHOOKS_WRITE,
        Permission.SECRETS_WRITE,
        Permission.CONNECTIONS_WRITE,
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
    if status is not None and status != TenantStatus.ACTIVE:
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


# --- which resources a principal sees ------------------------------------------------------


def sees(principal: Principal, owner_tenant: str | None) -> bool:
    """A tenant's resource is seen by principals acting in that tenant, and by a platform
    admin acting in none (to operate the platform)."""
    if principal.is_platform_admin and principal.tenant_id is None:
        return True
    return owner_tenant is not None and owner_tenant == principal.tenant_id


def sees_tenant(principal: Principal, tenant_id: str) -> bool:
    """Tenants are the platform's business: a platform admin sees every one (whichever
    it acts in); everybody else only their own."""
    return principal.is_platform_admin or principal.tenant_id == tenant_id


def is_self(principal: Principal, user_id: str) -> bool:
    return principal.kind == "user" and principal.subject_id == user_id


EVENT_READ_PERMISSIONS: dict[str, Permission] = {
    "pipeline": Permission.PIPELINES_READ,
    "pipeline_deployments": Permission.DEPLOYMENTS_READ,
    "deployment": Permission.DEPLOYMENTS_READ,
    "job": Permission.JOBS_READ,
    "run": Permission.RUNS_READ,
    "trigger": Permission.RUNS_READ,
    "tenant": Permission.TENANTS_READ,
    "usage": Permission.TENANTS_READ,
    "name_claim": Permission.PIPELINES_READ,
    "user": Permission.USERS_READ,
    "session": Permission.USERS_READ,
    "api_key": Permission.API_KEYS_READ,
    "webhook": Permission.WEBHOOKS_READ,
    "secret": Permission.SECRETS_READ,
    "connection": Permission.CONNECTIONS_READ,
}
"""Which permission reading an aggregate's events needs: the one that reads the
aggregate itself elsewhere: usage (quota bookkeeping) is the admin's, name claims
(of pipeline, deployment and job names) anyone's who reads those."""


def readable_event_kinds(principal: Principal) -> frozenset[str]:
    """The aggregate types whose events a principal may read in a feed or an audit
    listing: exactly what its role may read elsewhere (user, session and API-key events
    only for admins). A kind missing from the table is readable by nobody but a
    platform admin."""
    granted = permissions_of(principal)
    if principal.is_platform_admin:
        return frozenset(EVENT_READ_PERMISSIONS) | {"*"}
    return frozenset(kind for kind, need in EVENT_READ_PERMISSIONS.items() if need in granted)


def may_read_event(kinds: frozenset[str], aggregate_type: str) -> bool:
    return "*" in kinds or aggregate_type in kinds


# --- rules that depend on what a command asks -------------------------------------------


def check_tenant_fields(
    principal: Principal, current: Mapping[str, Any], asked: Mapping[str, Any]
) -> None:
    """A tenant's own admin may change its description and labels, nothing else; `asked`
    maps each field the request names to its new value (None: not named)."""
    if principal.is_platform_admin:
        return
    refused = sorted(
        field
        for field, value in asked.items()
        if field not in SELF_SERVICE_FIELDS and value is not None and value != current[field]
    )
    if refused:
        raise PermissionDenied(
            f"a tenant admin may change only {' and '.join(sorted(SELF_SERVICE_FIELDS))}; "
            f"not {', '.join(refused)}"
        )


def check_user_placement(
    principal: Principal, tenant_id: str | None, roles: tuple[str, ...]
) -> None:
    """A tenant admin creates users in its own tenant only."""
    if not principal.is_platform_admin and tenant_id != principal.tenant_id:
        raise PermissionDenied("tenant admins may only create users in their own tenant")
    check_may_grant(principal, roles)


def check_may_grant(principal: Principal, roles: tuple[str, ...]) -> None:
    if PLATFORM_ADMIN in roles and not principal.is_platform_admin:
        raise PermissionDenied("only a platform admin may grant platform_admin")


def check_password_change(principal: Principal, user_id: str) -> None:
    """Anybody changes their own password (proving the current one); changing another
    user's is administering users."""
    if not is_self(principal, user_id):
        authorize(principal, Permission.USERS_WRITE)


def check_key_roles(principal: Principal, roles: tuple[str, ...]) -> None:
    """Who may make an API key with these roles: a user (a leaked key must not be able to
    mint keys that outlive its revocation), granting only roles whose permissions it
    holds itself, and never platform_admin."""
    if principal.kind == "api_key":
        raise PermissionDenied("API keys are created by users, not by other API keys")
    if PLATFORM_ADMIN in roles:
        raise PermissionDenied("no API key may have the platform_admin role")
    granted = permissions_of(principal)
    for role in roles:
        if not ROLE_PERMISSIONS.get(role, frozenset()) <= granted:
            raise PermissionDenied(f"you may not grant the role {role}: it exceeds your own")


def check_environment_role(
    principal: Principal, environment: str, policy: EnvironmentPolicy
) -> None:
    """In a protected environment, creating, releasing to, rolling back and retiring
    deployments needs the admin role (editors may elsewhere). Asked before the
    environment's other rules and before quotas."""
    if policy.protected and not (principal.is_platform_admin or "admin" in principal.roles):
        raise PermissionDenied(
            f"environment {environment!r} is protected: only admins may change its deployments"
        )
