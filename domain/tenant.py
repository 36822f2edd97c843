"""The Tenant aggregate: a team whose pipelines, users and events are isolated."""

from __future__ import annotations

from uuid import UUID

from eventsourcing.domain import Aggregate

from domain.errors import InvalidCommand
from domain.events import CommandContext, NornCreated, NornEvent
from domain.text import nul_errors

PLANS = ("free", "pro", "enterprise")


class TenantEvent(NornEvent):
    aggregate_type = "tenant"


class TenantCreated(TenantEvent, NornCreated):
    name: str
    description: str = ""
    plan: str = "free"
    labels: dict[str, str] | None = None


class Tenant(Aggregate):
    def __init__(
        self, name: str, description: str, plan: str, labels: dict[str, str] | None
    ) -> None:
        self.name = name
        self.description = description
        self.plan = plan
        self.labels = dict(labels or {})
        self.status = "active"

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
    ) -> Tenant:
        text = {"name": name, "description": description, "labels": labels}
        for problem in nul_errors(text, ""):
            raise InvalidCommand(problem.message, problem.field)
        name = name.strip()
        if not name or len(name) > 100:
            raise InvalidCommand("tenant name must be 1 to 100 characters", "name")
        if plan not in PLANS:
            raise InvalidCommand(f"plan must be one of {', '.join(PLANS)}", "plan")
        return cls._create(
            TenantCreated,
            id=tenant_id,
            tenant_id=str(tenant_id),
            name=name,
            description=description,
            plan=plan,
            labels=labels,
            **ctx.event_fields(),
        )

    @property
    def tenant_id(self) -> str:
        return str(self.id)
