"""Several commands, one append (README "Batch", docs/architecture.md "Atomic batches").

While a `UnitOfWork` is staging (`staging(unit)`), `NornEventStore.append` writes
nothing: it keeps the aggregates it was given, with their pending events, and answers
the placeholder position `PENDING`. Loads and finds of a kept aggregate answer that very
object, so a later command sees what an earlier one decided (the pipeline it created,
the quota it took, the name it claimed) and adds its events to the same object. `commit`
then appends every kept aggregate in one `store.append`: one statement, one transaction
(§4), so either all the commands' events are stored or none. Whatever fails before the
commit leaves the store untouched: the kept objects are simply dropped.

What a command holds around its append (a pipeline placed in a namespace holds it
shared) is registered as a guard (`guard`) and held around the commit instead.

The commands must be ones whose only effect is their append: the batch controller
admits only those (api/controllers/batch_rules.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable, Iterator
from contextlib import AbstractContextManager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID

from eventsourcing.domain import Aggregate

from domain.errors import Conflict

if TYPE_CHECKING:
    from application.event_store import NornEventStore

A = TypeVar("A", bound=Aggregate)

PENDING = 0
"""The position a staged append answers: positions are positive, so 0 is recognisable
as "known at the commit" (the batch answers the commit's position instead)."""

_staging: ContextVar[UnitOfWork | None] = ContextVar("norn_unit_of_work", default=None)


class UnitOfWork:
    def __init__(self) -> None:
        self._kept: dict[UUID, Aggregate] = {}
        self._guards: dict[Hashable, Callable[[], AbstractContextManager[Any]]] = {}

    def stage(self, *aggregates: Aggregate | None) -> int:
        """Keep the aggregates for the commit. An aggregate must be the very object kept
        for its id, if one is: a second copy (built anew, or loaded around this unit)
        would append a second event at the same version, so the whole batch would fail at
        its commit; refusing it now names the operation instead."""
        for aggregate in aggregates:
            if aggregate is None or not aggregate.pending_events:
                continue  # nothing to append: a later load may read it afresh
            kept = self._kept.setdefault(aggregate.id, aggregate)
            if kept is not aggregate:
                raise Conflict(
                    f"{type(aggregate).__name__.lower()} {aggregate.id} was changed by an"
                    " earlier operation of this atomic batch in a way it cannot combine with"
                    " this one; send it in a separate request"
                )
        return PENDING

    def kept(self, aggregate_id: UUID) -> Aggregate | None:
        return self._kept.get(aggregate_id)

    def kept_of(self, cls: type[A]) -> list[A]:
        """The kept aggregates of a type, as they will be committed."""
        return [a for a in self._kept.values() if isinstance(a, cls)]

    def guard(self, key: Hashable, hold: Callable[[], AbstractContextManager[Any]]) -> None:
        """Hold `hold()` around the commit (once per key): what the command would have
        held around its own append, checked again against the state being committed."""
        self._guards.setdefault(key, hold)

    def commit(self, store: NornEventStore) -> int | None:
        """Append everything staged in one atomic append, within the guards; the position
        of its last event (None when nothing was decided). Raises what the append raises
        (VersionConflict when a concurrent command saved one of the aggregates first)."""
        token = _staging.set(None)  # this append is the real one
        try:
            with contextlib.ExitStack() as held:
                for key in sorted(self._guards, key=repr):  # one order: no lock cycles
                    held.enter_context(self._guards[key]())
                return store.append(*self._kept.values())
        finally:
            _staging.reset(token)

    def stored_version(self, aggregate_id: UUID) -> int | None:
        """The version a kept aggregate has in the store (None: not kept, or new)."""
        kept = self._kept.get(aggregate_id)
        if kept is None:
            return None
        return kept.version - len(kept.pending_events)


def current() -> UnitOfWork | None:
    """The unit of work the calling command runs in, if any."""
    return _staging.get()


@contextlib.contextmanager
def staging(unit: UnitOfWork) -> Iterator[UnitOfWork]:
    """Run the commands of this context (and the threads they start with the context's
    variables: application/threads.py) staged into `unit`."""
    token = _staging.set(unit)
    try:
        yield unit
    finally:
        _staging.reset(token)
