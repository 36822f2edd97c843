"""The one path of a command on an aggregate (docs/architecture.md, "The shape of a
command"): load the aggregate where the principal may see it, check the version the
caller expects (If-Match), let the aggregate decide, save it once together with any other
aggregate the decision touched (name claims), and answer `Changed`.

Every service holds one `Aggregates` per aggregate type its commands change; a create
builds the aggregate itself and goes straight to `save`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Generic, Protocol, TypeVar
from uuid import UUID

from eventsourcing.domain import Aggregate

from application.errors import NotFound
from application.event_store import NornEventStore, check_expected_version
from application.idempotency import earlier_change
from application.principal import Principal
from application.results import Changed
from domain.events import CommandContext

A = TypeVar("A", bound=Aggregate)

Decide = Callable[[A], Sequence[Aggregate | None] | None]
"""Runs the domain command(s) on the loaded aggregate; returns the other aggregates to
save in the same append (or None)."""


class Append(Protocol):
    def __call__(self, *aggregates: Aggregate | None, precondition: bool = False) -> int | None: ...


def _never(aggregate: Aggregate) -> bool:
    return False


class Aggregates(Generic[A]):
    """The aggregates of one type as commands see them. `scope` says whether a principal
    may see one (application/authorization.py holds the rules); one it may not see is
    NotFound, exactly like one that does not exist, so that another tenant's ids reveal
    nothing. `gone`: soft-deleted, so NotFound too (history reads pass `deleted_ok`).
    `append`: how the aggregates are saved, when that needs more than the store's append
    (a pipeline in a namespace holds it while it is saved)."""

    def __init__(
        self,
        store: NornEventStore,
        cls: type[A],
        kind: str,
        *,
        scope: Callable[[Principal, A], bool],
        gone: Callable[[A], bool] = _never,
        append: Append | None = None,
    ) -> None:
        self._store = store
        self._cls = cls
        self._kind = kind
        self._scope = scope
        self._gone = gone
        self._append: Append = append or store.append

    def load(
        self,
        principal: Principal,
        aggregate_id: UUID,
        *,
        deleted_ok: bool = False,
        expected_version: int | None = None,
    ) -> A:
        """The aggregate, if the principal may see it, at the version the caller expects
        (VersionConflict, a failed precondition, if not). A command that must hold
        something around its save (a quota's usage) loads, decides and saves itself, in
        this order; the others call `change`."""
        aggregate = self._store.load(self._cls, aggregate_id, self._kind)
        if not self._scope(principal, aggregate):
            raise NotFound(self._kind, aggregate_id)
        if self._gone(aggregate) and not deleted_ok:
            raise NotFound(self._kind, aggregate_id)
        check_expected_version(
            aggregate.version, expected_version, lambda: self._position_of(aggregate_id)
        )
        return aggregate

    def _position_of(self, aggregate_id: UUID) -> int | None:
        head = self._store.head_of(aggregate_id)
        return head[1] if head else None

    def change(
        self,
        principal: Principal,
        aggregate_id: UUID,
        decide: Decide[A],
        expected_version: int | None = None,
        ctx: CommandContext | None = None,
    ) -> Changed[A]:
        """Load, compare If-Match, decide, save once. Losing the race to a concurrent
        writer is VersionConflict: 412 when the caller sent If-Match (its precondition
        failed), else 409. With `ctx`, an idempotent request whose earlier attempt
        changed the aggregate already answers that change instead (`earlier`)."""
        earlier = self.earlier(principal, aggregate_id, ctx)
        if earlier is not None:
            return earlier
        aggregate = self.load(principal, aggregate_id, expected_version=expected_version)
        others = decide(aggregate) or ()
        return self.save(aggregate, *others, precondition=expected_version is not None)

    def earlier(
        self, principal: Principal, aggregate_id: UUID, ctx: CommandContext | None
    ) -> Changed[A] | None:
        """The answer of an earlier attempt of this idempotent request that changed the
        aggregate (its process died before the answer was kept), as it was then: before
        If-Match and before a delete, both of which that change may have moved on."""
        if ctx is None or ctx.idempotency is None or not ctx.idempotency.earlier_attempt:
            return None
        aggregate = self.load(principal, aggregate_id, deleted_ok=True)
        return earlier_change(self._store, self._cls, aggregate, ctx)

    def save(
        self, aggregate: A, *others: Aggregate | None, precondition: bool = False
    ) -> Changed[A]:
        """One atomic append of everything the command decided. A command that decided
        nothing (the same body again) appends nothing and answers position None."""
        pending = [a for a in (aggregate, *others) if a is not None and a.pending_events]
        if not pending:
            return Changed(aggregate, aggregate.version, None)
        position = self._append(aggregate, *others, precondition=precondition)
        return Changed(aggregate, aggregate.version, position)
