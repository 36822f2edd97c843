"""The Tenant aggregate: a team whose pipelines, users and events are isolated, with a
plan, resource quotas, namespaces and a lifecycle (active, suspended, deleted).

Quotas are limits on what a tenant may hold or do. Each plan has defaults
(`PLAN_QUOTAS`); a platform admin may override any of them per tenant. A deleted tenant
keeps its events (audit) but accepts no more commands.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any
from uuid import UUID

import msgspec
from eventsourcing.domain import Aggregate

from domain.errors import AggregateDeleted, Conflict, InvalidCommand
from domain.events import CommandContext, NornCreated, NornEvent
from domain.text import nul_errors

PLANS = ("free", "pro", "enterprise")


class TenantStatus(StrEnum):
    """str-valued: JSON, stored events and SQL see the plain string."""

    ACTIVE = "active"
    SUSPENDED = "suspended"
    DELETED = "deleted"


STATUSES = tuple(TenantStatus)
NAME_MAX = 100
DESCRIPTION_MAX = 10_000
OWNER_MAX = 200
MAX_LABELS = 50
LABEL_KEY = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?$")
LABEL_VALUE_MAX = 200
MAX_NAMESPACES = 100
# Like a DNS label (and a Kubernetes namespace): safe in URLs, subjects and paths.
NAMESPACE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
QUOTA_MAX = 10_000_000
ENVIRONMENT = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
MAX_ENVIRONMENT_POLICIES = 100
SELF_SERVICE_FIELDS = frozenset({"description", "labels"})
"""Fields a tenant's own admin may change; the rest (name, owner, plan, quotas, status)
are the platform admin's."""


class Quotas(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Per-tenant limits. None means "the plan's default" in an override, and
    "unlimited" nowhere: every plan sets every limit."""

    max_pipelines: int | None = None
    max_jobs: int | None = None
    max_deployments: int | None = None
    max_concurrent_runs: int | None = None
    max_runs_per_day: int | None = None

    def merged_over(self, defaults: Quotas) -> Quotas:
        """These overrides on top of `defaults`."""
        merged = {}
        for name in QUOTA_NAMES:
            value = getattr(self, name)
            merged[name] = getattr(defaults, name) if value is None else value
        return Quotas(**merged)


QUOTA_NAMES: tuple[str, ...] = tuple(Quotas.__struct_fields__)

PLAN_QUOTAS: dict[str, Quotas] = {
    "free": Quotas(
        max_pipelines=25,
        max_jobs=10,
        max_deployments=10,
        max_concurrent_runs=2,
        max_runs_per_day=500,
    ),
    "pro": Quotas(
        max_pipelines=250,
        max_jobs=100,
        max_deployments=100,
        max_concurrent_runs=10,
        max_runs_per_day=10_000,
    ),
    "enterprise": Quotas(
        max_pipelines=5_000,
        max_jobs=2_000,
        max_deployments=2_000,
        max_concurrent_runs=100,
        max_runs_per_day=1_000_000,
    ),
}
"""Each plan's default quotas (README: "Tenants, plans and quotas")."""


class EnvironmentPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """What a tenant requires of deployments to one of its environments (environment
    names are free-form; one without a policy has this default): `protected`, only
    admins create, release to, roll back or retire there; `require_verification`, no
    direct release there (blue-green only)."""

    protected: bool = False
    require_verification: bool = False


OPEN = EnvironmentPolicy()


def check_environment(environment: str) -> None:
    if not ENVIRONMENT.fullmatch(environment):
        raise InvalidCommand(
            "an environment is 1-63 lowercase letters, digits and '-', starting with a letter",
            "environment",
        )


class TenantEvent(NornEvent):
    aggregate_type = "tenant"


class TenantCreated(TenantEvent, NornCreated):
    name: str
    description: str = ""
    plan: str = "free"
    labels: dict[str, str] | None = None
    owner: str = ""


class TenantUpdated(TenantEvent):
    """The descriptive fields after the change (all of them, changed or not)."""

    name: str
    description: str
    labels: dict[str, str]
    owner: str

    def apply(self, aggregate: Tenant) -> None:
        aggregate.name = self.name
        aggregate.description = self.description
        aggregate.labels = dict(self.labels)
        aggregate.owner = self.owner


class TenantPlanChanged(TenantEvent):
    plan: str
    previous_plan: str

    def apply(self, aggregate: Tenant) -> None:
        aggregate.plan = self.plan


class TenantQuotasSet(TenantEvent):
    """The complete set of overrides (None = the plan's default)."""

    quotas: Quotas

    def apply(self, aggregate: Tenant) -> None:
        aggregate.quota_overrides = self.quotas


class TenantSuspended(TenantEvent):
    reason: str = ""

    def apply(self, aggregate: Tenant) -> None:
        aggregate.status = TenantStatus.SUSPENDED
        aggregate.status_reason = self.reason


class TenantReactivated(TenantEvent):
    def apply(self, aggregate: Tenant) -> None:
        aggregate.status = TenantStatus.ACTIVE
        aggregate.status_reason = ""


class TenantDeleted(TenantEvent):
    def apply(self, aggregate: Tenant) -> None:
        aggregate.status = TenantStatus.DELETED


class TenantNamespaceAdded(TenantEvent):
    namespace: str

    def apply(self, aggregate: Tenant) -> None:
        aggregate.namespaces = (*aggregate.namespaces, self.namespace)


class TenantNamespaceRemoved(TenantEvent):
    namespace: str

    def apply(self, aggregate: Tenant) -> None:
        aggregate.namespaces = tuple(n for n in aggregate.namespaces if n != self.namespace)


class TenantEnvironmentPolicySet(TenantEvent):
    environment: str
    policy: EnvironmentPolicy

    def apply(self, aggregate: Tenant) -> None:
        policies = {**aggregate.environments, self.environment: self.policy}
        aggregate.environments = {e: p for e, p in policies.items() if p != OPEN}


class Tenant(Aggregate):
    def __init__(
        self,
        name: str,
        description: str,
        plan: str,
        labels: dict[str, str] | None,
        owner: str = "",
    ) -> None:
        self.name = name
        self.description = description
        self.plan = plan
        self.labels = dict(labels or {})
        self.owner = owner
        self.status: TenantStatus = TenantStatus.ACTIVE
        self.status_reason = ""
        self.namespaces: tuple[str, ...] = ()
        self.quota_overrides = Quotas()
        self.environments: dict[str, EnvironmentPolicy] = {}
        """Policies of the environments that have one (not the default)."""

    @classmethod
    def create(
        cls,
        *,
        tenant_id: UUID,
        name: str,
        description: str,
        plan: str,
        labels: dict[str, str],
        ctx: CommandContext,
        owner: str = "",
    ) -> Tenant:
        name = _check_descriptive(name, description, labels, owner)
        _check_plan(plan)
        return cls._create(
            TenantCreated,
            id=tenant_id,
            tenant_id=str(tenant_id),
            name=name,
            description=description,
            plan=plan,
            labels=labels,
            owner=owner,
            **ctx.event_fields(),
        )

    @property
    def tenant_id(self) -> str:
        return str(self.id)

    @property
    def quotas(self) -> Quotas:
        """The limits in force: the overrides on top of the plan's defaults."""
        return self.quota_overrides.merged_over(PLAN_QUOTAS[self.plan])

    def quota(self, name: str) -> int:
        if name not in QUOTA_NAMES:
            raise KeyError(name)
        limit = getattr(self.quotas, name)
        assert isinstance(limit, int)
        return limit

    @property
    def writable(self) -> bool:
        """Whether the tenant's resources may change (only while active)."""
        return self.status == TenantStatus.ACTIVE

    # --- commands -----------------------------------------------------------------------

    def update(
        self,
        *,
        name: str,
        description: str,
        labels: dict[str, str],
        owner: str,
        ctx: CommandContext,
    ) -> bool:
        """Replace the descriptive fields; False (nothing recorded) if none changed."""
        self._require_not_deleted()
        name = _check_descriptive(name, description, labels, owner)
        if (name, description, labels, owner) == (
            self.name,
            self.description,
            self.labels,
            self.owner,
        ):
            return False
        self._trigger(
            TenantUpdated, ctx, name=name, description=description, labels=labels, owner=owner
        )
        return True

    def change_plan(self, plan: str, ctx: CommandContext) -> bool:
        self._require_not_deleted()
        _check_plan(plan)
        if plan == self.plan:
            return False
        self._trigger(TenantPlanChanged, ctx, plan=plan, previous_plan=self.plan)
        return True

    def set_quotas(self, quotas: Quotas, ctx: CommandContext) -> bool:
        self._require_not_deleted()
        for name in QUOTA_NAMES:
            value = getattr(quotas, name)
            if value is not None and not 0 <= value <= QUOTA_MAX:
                raise InvalidCommand(f"{name} must be between 0 and {QUOTA_MAX}", name)
        if quotas == self.quota_overrides:
            return False
        self._trigger(TenantQuotasSet, ctx, quotas=quotas)
        return True

    def suspend(self, reason: str, ctx: CommandContext) -> bool:
        self._require_not_deleted()
        if nul_errors(reason, "reason") or len(reason) > 1000:
            raise InvalidCommand("reason must be at most 1000 characters, without NUL", "reason")
        if self.status == TenantStatus.SUSPENDED:
            return False
        self._trigger(TenantSuspended, ctx, reason=reason)
        return True

    def reactivate(self, ctx: CommandContext) -> bool:
        self._require_not_deleted()
        if self.status == TenantStatus.ACTIVE:
            return False
        self._trigger(TenantReactivated, ctx)
        return True

    def delete(self, ctx: CommandContext) -> None:
        self._require_not_deleted()
        self._trigger(TenantDeleted, ctx)

    def add_namespace(self, namespace: str, ctx: CommandContext) -> None:
        self._require_not_deleted()
        if not NAMESPACE.fullmatch(namespace):
            raise InvalidCommand(
                "a namespace is 1-63 lowercase letters, digits and '-', starting and ending "
                "with a letter or digit",
                "namespace",
            )
        if namespace in self.namespaces:
            raise Conflict(f"namespace {namespace!r} already exists", "namespace")
        if len(self.namespaces) >= MAX_NAMESPACES:
            raise InvalidCommand(f"a tenant has at most {MAX_NAMESPACES} namespaces", "namespace")
        self._trigger(TenantNamespaceAdded, ctx, namespace=namespace)

    def remove_namespace(self, namespace: str, ctx: CommandContext) -> None:
        self._require_not_deleted()
        if namespace not in self.namespaces:
            raise InvalidCommand(f"namespace {namespace!r} does not exist", "namespace")
        self._trigger(TenantNamespaceRemoved, ctx, namespace=namespace)

    def environment_policy(self, environment: str) -> EnvironmentPolicy:
        return self.environments.get(environment, OPEN)

    def set_environment_policy(
        self, environment: str, policy: EnvironmentPolicy, ctx: CommandContext
    ) -> bool:
        """Replace the environment's policy (the default removes it); False (nothing
        recorded) when it is the one in force."""
        self._require_not_deleted()
        check_environment(environment)
        if policy == self.environment_policy(environment):
            return False
        if (
            environment not in self.environments
            and len(self.environments) >= MAX_ENVIRONMENT_POLICIES
        ):
            raise InvalidCommand(
                f"a tenant has at most {MAX_ENVIRONMENT_POLICIES} environment policies",
                "environment",
            )
        self._trigger(TenantEnvironmentPolicySet, ctx, environment=environment, policy=policy)
        return True

    def _require_not_deleted(self) -> None:
        if self.status == TenantStatus.DELETED:
            raise AggregateDeleted(f"tenant {self.id} was deleted")

    def _trigger(self, event_class: type[TenantEvent], ctx: CommandContext, **fields: Any) -> None:
        self.trigger_event(event_class, tenant_id=self.tenant_id, **ctx.event_fields(), **fields)


def _check_plan(plan: str) -> None:
    if plan not in PLANS:
        raise InvalidCommand(f"plan must be one of {', '.join(PLANS)}", "plan")


def _check_descriptive(name: str, description: str, labels: dict[str, str], owner: str) -> str:
    """The stripped name, after checking every descriptive field."""
    text = {"name": name, "description": description, "labels": labels, "owner": owner}
    for problem in nul_errors(text, ""):
        raise InvalidCommand(problem.message, problem.field)
    name = name.strip()
    if not name or len(name) > NAME_MAX:
        raise InvalidCommand(f"tenant name must be 1 to {NAME_MAX} characters", "name")
    if len(description) > DESCRIPTION_MAX:
        raise InvalidCommand(
            f"description must be at most {DESCRIPTION_MAX} characters", "description"
        )
    if len(owner) > OWNER_MAX:
        raise InvalidCommand(f"owner must be at most {OWNER_MAX} characters", "owner")
    if len(labels) > MAX_LABELS:
        raise InvalidCommand(f"at most {MAX_LABELS} labels", "labels")
    for key, value in labels.items():
        if not LABEL_KEY.fullmatch(key):
            raise InvalidCommand(
                f"label key {key!r}: 1-63 letters, digits, '.', '_', '/' or '-', starting and "
                "ending with a letter or digit",
                f"labels.{key}",
            )
        if len(value) > LABEL_VALUE_MAX:
            raise InvalidCommand(
                f"label {key!r}: value at most {LABEL_VALUE_MAX} characters", f"labels.{key}"
            )
    return name
