"""Tenant use cases: create, read, update (descriptive fields, plan, status), delete,
namespaces, quotas and usage."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import replace as replace_principal
from uuid import UUID, uuid4

from application.authorization import (
    Permission,
    authorize,
    require_tenant,
    require_writable_tenant,
)
from application.errors import NotFound, PermissionDenied
from application.event_store import NornEventStore, check_expected_version
from application.ports import Usage
from application.principal import Principal
from application.quotas import QUOTA_RESOURCES
from domain.errors import InvalidCommand
from domain.events import CommandContext
from domain.name_claim import NameClaim, claim_id
from domain.tenant import QUOTA_NAMES, SELF_SERVICE_FIELDS, Quotas, Tenant

_SCOPE = "tenant"


@dataclass(frozen=True)
class TenantChanges:
    """A PUT of a tenant: the fields given (None = leave as it is)."""

    name: str | None = None
    description: str | None = None
    labels: dict[str, str] | None = None
    owner: str | None = None
    plan: str | None = None
    status: str | None = None
    """active or suspended (DELETE deletes)."""
    status_reason: str = ""


@dataclass(frozen=True)
class QuotaUsage:
    limit: int
    used: int | None
    """None: the resource is not counted yet (jobs and deployments)."""


def writable_tenant(store: NornEventStore, principal: Principal) -> Tenant:
    """The tenant a principal changes things in; PermissionDenied unless it is active.
    Authentication read it moments ago (in the same query as the session and user): that
    copy is used, so a command costs no second read. Read-only: commands that change the
    tenant load it themselves."""
    require_writable_tenant(principal)
    tenant = principal.tenant
    if not (isinstance(tenant, Tenant) and tenant.tenant_id == principal.tenant_id):
        tenant = store.load(Tenant, UUID(require_tenant(principal)), "tenant")
    if not tenant.writable:
        require_writable_tenant(replace_principal(principal, tenant_status=tenant.status))
    return tenant


class TenantService:
    def __init__(self, store: NornEventStore, usage: Usage) -> None:
        self._store = store
        self._usage = usage

    def create(
        self,
        principal: Principal,
        *,
        name: str,
        description: str,
        plan: str,
        labels: dict[str, str],
        owner: str,
        ctx: CommandContext,
    ) -> tuple[Tenant, int | None]:
        authorize(principal, Permission.TENANTS_MANAGE)
        tenant = Tenant.create(
            tenant_id=uuid4(),
            name=name,
            description=description,
            plan=plan,
            labels=labels,
            owner=owner,
            ctx=ctx,
        )
        claim = self._claim(tenant.name, tenant.id, ctx)
        return tenant, self._store.append(tenant, claim)

    def load(self, principal: Principal, tenant_id: UUID) -> Tenant:
        """The tenant, if the principal may see it: platform admins any, everybody else
        only their own (another tenant is reported missing, never forbidden)."""
        if not principal.is_platform_admin and principal.tenant_id != str(tenant_id):
            raise NotFound("tenant", tenant_id)
        return self._store.load(Tenant, tenant_id, "tenant")

    def update(
        self,
        principal: Principal,
        tenant_id: UUID,
        changes: TenantChanges,
        ctx: CommandContext,
        expected_version: int | None = None,
    ) -> tuple[Tenant, int | None]:
        """Apply a PUT: the descriptive fields, then plan, then status, as one append."""
        authorize(principal, Permission.TENANTS_UPDATE)
        tenant = self.load(principal, tenant_id)
        check_expected_version(tenant.version, expected_version)
        if not principal.is_platform_admin:
            _check_self_service(tenant, changes)
        old_name = tenant.name
        tenant.update(
            name=tenant.name if changes.name is None else changes.name,
            description=tenant.description if changes.description is None else changes.description,
            labels=tenant.labels if changes.labels is None else changes.labels,
            owner=tenant.owner if changes.owner is None else changes.owner,
            ctx=ctx,
        )
        if changes.plan is not None:
            tenant.change_plan(changes.plan, ctx)
        if changes.status == "suspended":
            tenant.suspend(changes.status_reason, ctx)
        elif changes.status == "active":
            tenant.reactivate(ctx)
        elif changes.status is not None:
            raise InvalidCommand(
                "status must be active or suspended (DELETE deletes a tenant)", "status"
            )
        claims = self._rename(tenant, old_name, ctx)
        position = self._store.append(tenant, *claims, precondition=expected_version is not None)
        return tenant, position

    def delete(
        self,
        principal: Principal,
        tenant_id: UUID,
        ctx: CommandContext,
        expected_version: int | None = None,
    ) -> tuple[Tenant, int | None]:
        """Soft: the tenant's users and keys stop authenticating at once; its events and
        its name stay (audit), so the name is not given to another tenant."""
        return self._change(
            principal,
            tenant_id,
            Permission.TENANTS_MANAGE,
            expected_version,
            lambda tenant: tenant.delete(ctx),
        )

    def add_namespace(
        self,
        principal: Principal,
        tenant_id: UUID,
        namespace: str,
        ctx: CommandContext,
        expected_version: int | None = None,
    ) -> tuple[Tenant, int | None]:
        return self._change(
            principal,
            tenant_id,
            Permission.TENANTS_UPDATE,
            expected_version,
            lambda tenant: tenant.add_namespace(namespace, ctx),
        )

    def namespace(
        self, principal: Principal, tenant_id: UUID, namespace: str
    ) -> tuple[Tenant, int]:
        """One of the tenant's namespaces and how many resources it holds."""
        authorize(principal, Permission.TENANTS_READ)
        tenant = self.load(principal, tenant_id)
        if namespace not in tenant.namespaces:
            raise NotFound("namespace", namespace)
        return tenant, self._usage.in_namespace(tenant.tenant_id, namespace)

    def remove_namespace(
        self,
        principal: Principal,
        tenant_id: UUID,
        namespace: str,
        ctx: CommandContext,
        expected_version: int | None = None,
    ) -> tuple[Tenant, int | None]:
        authorize(principal, Permission.TENANTS_UPDATE)
        self.load(principal, tenant_id)  # visible to the principal, before locking
        # Exclusively: no pipeline is being placed in it while it is counted and removed.
        with self._usage.namespace_hold(str(tenant_id), namespace, exclusive=True):
            tenant = self.load(principal, tenant_id)
            check_expected_version(tenant.version, expected_version)
            if namespace not in tenant.namespaces:
                raise NotFound("namespace", namespace)
            in_use = self._usage.in_namespace(tenant.tenant_id, namespace)
            if in_use:
                raise InvalidCommand(
                    f"namespace {namespace!r} still holds {in_use} resource(s); move or "
                    "delete them first",
                    "namespace",
                )
            tenant.remove_namespace(namespace, ctx)
            position = self._store.append(tenant, precondition=expected_version is not None)
        return tenant, position

    def set_quotas(
        self,
        principal: Principal,
        tenant_id: UUID,
        quotas: Quotas,
        ctx: CommandContext,
        expected_version: int | None = None,
    ) -> tuple[Tenant, int | None]:
        return self._change(
            principal,
            tenant_id,
            Permission.TENANTS_MANAGE,
            expected_version,
            lambda tenant: tenant.set_quotas(quotas, ctx),
        )

    def usage(self, principal: Principal, tenant_id: UUID) -> tuple[Tenant, dict[str, QuotaUsage]]:
        """Each quota's limit and what the tenant uses of it now (from read models)."""
        authorize(principal, Permission.TENANTS_READ)
        tenant = self.load(principal, tenant_id)
        return tenant, {
            name: QuotaUsage(
                tenant.quota(name), self._usage.count(tenant.tenant_id, QUOTA_RESOURCES[name])
            )
            for name in QUOTA_NAMES
        }

    def _change(
        self,
        principal: Principal,
        tenant_id: UUID,
        permission: Permission,
        expected_version: int | None,
        decide: Callable[[Tenant], object],
    ) -> tuple[Tenant, int | None]:
        """One command on one tenant: authorise, load, compare If-Match, decide, save."""
        authorize(principal, permission)
        tenant = self.load(principal, tenant_id)
        check_expected_version(tenant.version, expected_version)
        decide(tenant)
        return tenant, self._store.append(tenant, precondition=expected_version is not None)

    def _claim(self, name: str, holder: UUID, ctx: CommandContext) -> NameClaim:
        claim = self._store.find(NameClaim, claim_id(_SCOPE, name))
        if claim is None:
            return NameClaim.claim_new(
                tenant_id=None, scope=_SCOPE, name=name, holder_id=str(holder), ctx=ctx
            )
        claim.claim(str(holder), ctx)
        return claim

    def _rename(self, tenant: Tenant, old_name: str, ctx: CommandContext) -> list[NameClaim]:
        if claim_id(_SCOPE, old_name) == claim_id(_SCOPE, tenant.name):
            return []
        claims = [self._claim(tenant.name, tenant.id, ctx)]
        old = self._store.find(NameClaim, claim_id(_SCOPE, old_name))
        if old is not None:
            old.release(str(tenant.id), ctx)
            claims.append(old)
        return claims


def _check_self_service(tenant: Tenant, changes: TenantChanges) -> None:
    """A tenant's own admin may change its description and labels, nothing else."""
    current = {
        "name": tenant.name,
        "owner": tenant.owner,
        "plan": tenant.plan,
        "status": tenant.status,
    }
    refused = sorted(
        field
        for field, value in current.items()
        if field not in SELF_SERVICE_FIELDS
        and getattr(changes, field) is not None
        and getattr(changes, field) != value
    )
    if refused:
        raise PermissionDenied(
            f"a tenant admin may change only {' and '.join(sorted(SELF_SERVICE_FIELDS))}; "
            f"not {', '.join(refused)}"
        )
