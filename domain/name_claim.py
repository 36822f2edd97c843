"""NameClaim: makes a name unique within a scope, enforced by the event store itself.

Its id is derived from (scope, name), so two aggregates claiming the same name collide
on the store's unique (originator_id, originator_version) and exactly one wins. A claim
is saved in the same atomic append as the aggregate that takes the name.
"""

from __future__ import annotations

from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.errors import NameTaken
from domain.events import CommandContext, NornCreated, NornEvent


def claim_id(scope: str, name: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"norn:name:{scope}:{name.strip().casefold()}")


class NameClaimEvent(NornEvent):
    aggregate_type = "name_claim"


class NameClaimTaken(NameClaimEvent, NornCreated):
    scope: str
    name: str
    holder_id: str

    def apply(self, aggregate: NameClaim) -> None:
        aggregate.holder_id = self.holder_id


class NameClaimRetaken(NameClaimEvent):
    holder_id: str

    def apply(self, aggregate: NameClaim) -> None:
        aggregate.holder_id = self.holder_id


class NameClaimReleased(NameClaimEvent):
    holder_id: str

    def apply(self, aggregate: NameClaim) -> None:
        aggregate.holder_id = None


class NameClaim(Aggregate):
    def __init__(self, tenant_id: str | None, scope: str, name: str) -> None:
        self.tenant_id = tenant_id
        self.scope = scope
        self.name = name
        self.holder_id: str | None = None

    @classmethod
    def claim_new(
        cls, *, tenant_id: str | None, scope: str, name: str, holder_id: str, ctx: CommandContext
    ) -> NameClaim:
        return cls._create(
            NameClaimTaken,
            id=claim_id(scope, name),
            tenant_id=tenant_id,
            scope=scope,
            name=name,
            holder_id=holder_id,
            **ctx.event_fields(),
        )

    def claim(self, holder_id: str, ctx: CommandContext) -> None:
        if self.holder_id == holder_id:
            return
        if self.holder_id is not None:
            raise NameTaken(self.scope.split(":")[0], self.name, self.holder_id)
        self.trigger_event(
            NameClaimRetaken, tenant_id=self.tenant_id, holder_id=holder_id, **ctx.event_fields()
        )

    def release(self, holder_id: str, ctx: CommandContext) -> None:
        if self.holder_id != holder_id:
            return
        self.trigger_event(
            NameClaimReleased, tenant_id=self.tenant_id, holder_id=holder_id, **ctx.event_fields()
        )
