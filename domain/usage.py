"""Usage: how much of one counted resource a tenant holds, kept by the event store.

One aggregate per (tenant, resource[, period]), its id derived from them like a name
claim's. A command that adds to the resource takes from it in the same atomic append as
its own events, so the store's unique (originator_id, originator_version) decides: two
commands that both read the last free unit cannot both be saved. A command that removes
one releases it in its own append. The first take of a tenant's resource starts the
count from what existed before usage was kept (see application/quotas.py).
"""

from __future__ import annotations

from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.errors import QuotaExceeded
from domain.events import CommandContext, NornCreated, NornEvent


def usage_id(tenant_id: str, resource: str, period: str = "") -> UUID:
    return uuid5(NAMESPACE_URL, f"norn:usage:{tenant_id}:{resource}:{period}")


class UsageEvent(NornEvent):
    aggregate_type = "usage"


class UsageCounted(UsageEvent, NornCreated):
    """Usage starts being kept, at what was counted then."""

    resource: str
    period: str
    used: int

    def apply(self, aggregate: Usage) -> None:
        aggregate.used = self.used


class UsageTaken(UsageEvent):
    amount: int
    used: int
    """After the take: the count is readable from any single event."""

    def apply(self, aggregate: Usage) -> None:
        aggregate.used = self.used


class UsageReleased(UsageEvent):
    amount: int
    used: int

    def apply(self, aggregate: Usage) -> None:
        aggregate.used = self.used


class Usage(Aggregate):
    def __init__(self, tenant_id: str, resource: str, period: str) -> None:
        self.tenant_id = tenant_id
        self.resource = resource
        self.period = period
        self.used = 0

    @classmethod
    def start(
        cls, *, tenant_id: str, resource: str, period: str, used: int, ctx: CommandContext
    ) -> Usage:
        if used < 0:
            raise ValueError("usage cannot be negative")
        return cls._create(
            UsageCounted,
            id=usage_id(tenant_id, resource, period),
            tenant_id=tenant_id,
            resource=resource,
            period=period,
            used=used,
            **ctx.event_fields(),
        )

    def take(self, amount: int, limit: int, quota: str, ctx: CommandContext) -> None:
        """Refused when the tenant would hold more than `limit`. A limit lowered below
        what is held refuses every take until enough is released."""
        if amount < 1:
            raise ValueError("take at least one")
        if self.used + amount > limit:
            raise QuotaExceeded(quota, limit, self.used)
        self.trigger_event(
            UsageTaken,
            tenant_id=self.tenant_id,
            amount=amount,
            used=self.used + amount,
            **ctx.event_fields(),
        )

    def release(self, amount: int, ctx: CommandContext) -> None:
        """Never below zero: a release of something counted before usage was kept, and
        since removed, finds nothing left to release."""
        amount = min(amount, self.used)
        if amount < 1:
            return
        self.trigger_event(
            UsageReleased,
            tenant_id=self.tenant_id,
            amount=amount,
            used=self.used - amount,
            **ctx.event_fields(),
        )
