"""Commands asked with an Idempotency-Key create at most once (README "Idempotency-Key",
docs/architecture.md "Idempotent commands"). The id of what a create makes derives from
the key (`new_id`): a second attempt of the same request builds an aggregate with the same
id, whose append the store refuses, since that id has a first event already. The second
attempt then answers what the first one created, as the first would have answered it
(`first_result`): the aggregate as its creating append left it, and that append's
position. Nothing here costs a round trip unless an earlier attempt may have acted."""

from __future__ import annotations

import uuid
from typing import TypeVar

from eventsourcing.domain import Aggregate

from application.errors import NotFound
from application.event_store import NornEventStore
from application.results import Changed
from domain.events import CommandContext

A = TypeVar("A", bound=Aggregate)

_IDS = uuid.UUID("0d7a6c52-3f0e-5b8e-9a43-6f1c2b1f7e19")
"""The uuid5 namespace of ids derived from Idempotency-Keys."""


def new_id(ctx: CommandContext, kind: str) -> uuid.UUID:
    """The id of the `kind` aggregate this command creates: derived from the
    Idempotency-Key when there is one (the same for every attempt of the request),
    else random."""
    if ctx.idempotency is None:
        return uuid.uuid4()
    return uuid.uuid5(_IDS, f"{kind}:{ctx.idempotency.key_id}")


def earlier_result(
    store: NornEventStore, cls: type[A], aggregate_id: uuid.UUID, ctx: CommandContext
) -> Changed[A] | None:
    """What an earlier attempt of this request created, looked for only when one may have
    acted (its process died before its answer was kept): one read, on retries only."""
    if ctx.idempotency is None or not ctx.idempotency.earlier_attempt:
        return None
    return first_result(store, cls, aggregate_id, ctx)


def first_result(
    store: NornEventStore, cls: type[A], aggregate_id: uuid.UUID, ctx: CommandContext
) -> Changed[A] | None:
    """The aggregate as the append that created it left it, with that append's last
    position: what that command answered. None if it does not exist (or is no `cls`;
    a derived id cannot name another kind's aggregate, short of a uuid5 collision), or
    if the command has no Idempotency-Key (its ids are not derived)."""
    if ctx.idempotency is None:
        return None
    return _result_of_append(store, cls, aggregate_id, 1, ctx)


def earlier_creation(
    store: NornEventStore, cls: type[A], aggregate_id: uuid.UUID, ctx: CommandContext
) -> Changed[A] | None:
    """For a create whose id derives from what it creates (a username), not from the
    key: what an earlier attempt of this request created, known by its first event's
    cause; looked for only when such an attempt may have acted."""
    if ctx.idempotency is None or not ctx.idempotency.earlier_attempt:
        return None
    events = store.stream(aggregate_id)
    if not events or getattr(events[0], "causation_id", None) != ctx.causation_id:
        return None
    return _result_of_append(store, cls, aggregate_id, 1, ctx)


def earlier_change(
    store: NornEventStore, cls: type[A], aggregate: A, ctx: CommandContext
) -> Changed[A] | None:
    """What an earlier attempt of this request changed on an existing aggregate, looked
    for only when one may have acted: its events carry the request's causation id (the
    same for every attempt of an idempotent request), so the latest one of them names
    the append, whose answer is rebuilt. One read of the aggregate's events, on
    retries after a crash only."""
    if ctx.idempotency is None or not ctx.idempotency.earlier_attempt:
        return None
    versions = [
        event.originator_version
        for event in store.stream(aggregate.id)
        if getattr(event, "causation_id", None) == ctx.causation_id
    ]
    if not versions:
        return None
    return _result_of_append(store, cls, aggregate.id, max(versions), ctx)


def _result_of_append(
    store: NornEventStore, cls: type[A], aggregate_id: uuid.UUID, version: int, ctx: CommandContext
) -> Changed[A] | None:
    """The aggregate as the append that stored its event at `version` left it, with that
    append's last position, marked (and noted in the context, for the API's
    Idempotent-Replayed) as an earlier attempt's answer."""
    appended = store.appended(aggregate_id, version)
    if appended is None:
        return None
    version, position = appended
    try:
        aggregate = store.load(cls, aggregate_id, cls.__name__.lower(), version=version)
    except NotFound:
        return None
    if ctx.idempotency is not None:
        ctx.idempotency.answered_earlier.append(str(aggregate_id))
    return Changed(aggregate, version, position, replayed=True)
