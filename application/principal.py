"""Who a request acts as. Every command and query is made by a principal."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from domain.tenant import TenantStatus


@dataclass(frozen=True)
class Principal:
    subject_id: str
    """The user's (or API key's) id."""
    name: str
    tenant_id: str | None
    """The tenant the principal acts in; None for a platform admin not acting in one."""
    roles: frozenset[str]
    kind: str = "user"
    """'user', 'api_key' or 'system'."""
    session_id: str | None = None
    """The login session (refresh-token family) a user's access token belongs to."""
    tenant_status: TenantStatus | None = None
    """active, suspended or deleted: the status of `tenant_id` when authenticated."""
    plan: str | None = None
    """The plan of `tenant_id` (rate limits); None outside a tenant."""
    tenant: Any = field(default=None, compare=False, repr=False)
    """The Tenant aggregate of `tenant_id` as authentication found it (current as of the
    request's one authentication query), so that a command needs no second read of it;
    read-only (it may be the repository's cached copy). None when not at hand."""

    @property
    def actor(self) -> str:
        """How events record this principal: user:<id>, api_key:<id>, system:<role>."""
        return f"{self.kind}:{self.subject_id}"

    @property
    def is_platform_admin(self) -> bool:
        return "platform_admin" in self.roles

    def acting_in(
        self, tenant_id: str, status: TenantStatus, plan: str, tenant: Any = None
    ) -> Principal:
        """A platform admin's view of itself inside one tenant."""
        return replace(self, tenant_id=tenant_id, tenant_status=status, plan=plan, tenant=tenant)


def system_principal(role: str) -> Principal:
    return Principal(role, f"system:{role}", None, frozenset({"platform_admin"}), "system")
