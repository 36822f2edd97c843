"""Tenant use cases: create, read, update (descriptive fields, plan, status), delete,
namespaces, quotas and usage."""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import replace as replace_principal
from typing import TypeVar
from uuid import UUID

from application.authorization import (
    check_tenant_fields,
    require_tenant,
    require_writable_tenant,
    sees_tenant,
)
from application.commands import Aggregates
from application.errors import NotFound
from application.event_store import NornEventStore
from application.idempotency import earlier_result, new_id
from application.name_claims import move_name, take_name
from application.ports import Usage
from application.principal import Principal
from application.quotas import QUOTA_RESOURCES
from application.results import Changed
from domain.errors import Conflict, InvalidCommand
from domain.events import CommandContext
from domain.name_claim import NameClaim
from domain.tenant import QUOTA_NAMES, EnvironmentPolicy, Quotas, Tenant, TenantStatus

_SCOPE = "tenant"
_PUT_FIELDS = ("name", "description", "labels", "owner", "plan", "status")
T = TypeVar("T")


@dataclass(frozen=True)
class TenantChanges:
    """A PUT of a tenant: the fields given (None = leave as it is)."""

    name: str | None = None
    description: str | None = None
    labels: dict[str, str] | None = None
    owner: str | None = None
    plan: str | None = None
    status: TenantStatus | None = None
    """active or suspended (DELETE deletes)."""
    status_reason: str = ""


@dataclass(frozen=True)
class QuotaUsage:
    limit: int
    used: int | None
    """None: a resource no read model counts (projections/usage.py counts every quota's)."""


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
        self._tenants = Aggregates(
            store,
            Tenant,
            "tenant",
            scope=lambda principal, tenant: sees_tenant(principal, tenant.tenant_id),
        )

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
    ) -> Changed[Tenant]:
        tenant_id = new_id(ctx, "tenant")  # from an Idempotency-Key, if one came
        earlier = earlier_result(self._store, Tenant, tenant_id, ctx)
        if earlier is not None:
            return earlier
        tenant = Tenant.create(
            tenant_id=tenant_id,
            name=name,
            description=description,
            plan=plan,
            labels=labels,
            owner=owner,
            ctx=ctx,
        )
        return self._tenants.save(tenant, self._claim(tenant.name, tenant.id, ctx))

    def load(self, principal: Principal, tenant_id: UUID) -> Tenant:
        """The tenant, if the principal may see it (another tenant is NotFound)."""
        return self._tenants.load(principal, tenant_id)

    def update(
        self,
        principal: Principal,
        tenant_id: UUID,
        changes: TenantChanges,
        ctx: CommandContext,
        expected_version: int | None = None,
    ) -> Changed[Tenant]:
        """Apply a PUT: the descriptive fields, then plan, then status, as one append."""

        def decide(tenant: Tenant) -> list[NameClaim]:
            current = {field: getattr(tenant, field) for field in _PUT_FIELDS}
            check_tenant_fields(principal, current, {f: getattr(changes, f) for f in current})
            old_name = tenant.name
            tenant.update(
                name=_given(changes.name, tenant.name),
                description=_given(changes.description, tenant.description),
                labels=_given(changes.labels, tenant.labels),
                owner=_given(changes.owner, tenant.owner),
                ctx=ctx,
            )
            if changes.plan is not None:
                tenant.change_plan(changes.plan, ctx)
            if changes.status == TenantStatus.SUSPENDED:
                tenant.suspend(changes.status_reason, ctx)
            elif changes.status == TenantStatus.ACTIVE:
                tenant.reactivate(ctx)
            elif changes.status is not None:
                raise InvalidCommand(
                    "status must be active or suspended (DELETE deletes a tenant)", "status"
                )
            return self._rename(tenant, old_name, ctx)

        return self._tenants.change(principal, tenant_id, decide, expected_version, ctx=ctx)

    def delete(
        self,
        principal: Principal,
        tenant_id: UUID,
        ctx: CommandContext,
        expected_version: int | None = None,
    ) -> Changed[Tenant]:
        """Soft: the tenant's users and keys stop authenticating at once; its events and
        its name stay (audit), so the name is not given to another tenant."""

        def decide(tenant: Tenant) -> None:
            tenant.delete(ctx)

        return self._tenants.change(principal, tenant_id, decide, expected_version, ctx=ctx)

    def add_namespace(
        self,
        principal: Principal,
        tenant_id: UUID,
        namespace: str,
        ctx: CommandContext,
        expected_version: int | None = None,
    ) -> Changed[Tenant]:
        def decide(tenant: Tenant) -> None:
            tenant.add_namespace(namespace, ctx)

        return self._tenants.change(principal, tenant_id, decide, expected_version, ctx=ctx)

    def set_environment_policy(
        self,
        principal: Principal,
        tenant_id: UUID,
        environment: str,
        policy: EnvironmentPolicy,
        ctx: CommandContext,
        expected_version: int | None = None,
    ) -> Changed[Tenant]:
        """What deployments to `environment` require (a tenant admin's; the default
        policy removes it). Setting the one in force changes nothing (position None)."""

        def decide(tenant: Tenant) -> None:
            tenant.set_environment_policy(environment, policy, ctx)

        return self._tenants.change(principal, tenant_id, decide, expected_version, ctx=ctx)

    def namespace(
        self, principal: Principal, tenant_id: UUID, namespace: str
    ) -> tuple[Tenant, int]:
        """One of the tenant's namespaces and how many resources it holds."""
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
    ) -> Changed[Tenant]:
        def decide(tenant: Tenant) -> None:
            if namespace not in tenant.namespaces:
                raise NotFound("namespace", namespace)
            in_use = self._usage.in_namespace(tenant.tenant_id, namespace)
            if in_use:
                raise Conflict(
                    f"namespace {namespace!r} still holds {in_use} resource(s); move or "
                    "delete them first",
                    "namespace",
                )
            tenant.remove_namespace(namespace, ctx)

        self.load(principal, tenant_id)  # visible to the principal, before locking
        # Exclusively: no pipeline is being placed in it while it is counted and removed;
        # the tenant is loaded (again) and saved inside.
        with self._usage.namespace_hold(str(tenant_id), namespace, exclusive=True):
            return self._tenants.change(principal, tenant_id, decide, expected_version, ctx=ctx)

    def set_quotas(
        self,
        principal: Principal,
        tenant_id: UUID,
        quotas: Quotas,
        ctx: CommandContext,
        expected_version: int | None = None,
    ) -> Changed[Tenant]:
        def decide(tenant: Tenant) -> None:
            tenant.set_quotas(quotas, ctx)

        return self._tenants.change(principal, tenant_id, decide, expected_version, ctx=ctx)

    def usage(self, principal: Principal, tenant_id: UUID) -> tuple[Tenant, dict[str, QuotaUsage]]:
        """Each quota's limit and what the tenant uses of it now (from read models)."""
        tenant = self.load(principal, tenant_id)
        return tenant, {
            name: QuotaUsage(
                tenant.quota(name), self._usage.count(tenant.tenant_id, QUOTA_RESOURCES[name])
            )
            for name in QUOTA_NAMES
        }

    def _claim(self, name: str, holder: UUID, ctx: CommandContext) -> NameClaim:
        return take_name(self._store, _SCOPE, name, str(holder), ctx, tenant_id=None)

    def _rename(self, tenant: Tenant, old_name: str, ctx: CommandContext) -> list[NameClaim]:
        return move_name(
            self._store, _SCOPE, old_name, tenant.name, str(tenant.id), ctx, tenant_id=None
        )


def _given(value: T | None, current: T) -> T:
    """A PUT's field: the value given, or the current one when the request left it out."""
    return current if value is None else value
