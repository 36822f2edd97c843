"""The application services on an in-memory event store (the eventsourcing library's
POPO persistence), for service-level tests that run whole use cases in milliseconds.

`StoreUsage` counts quota usage from the store's own events with the production delta
table (projections/usage.py RESOURCES), so the tests exercise the real counting rules,
not a stand-in for them; what it leaves out is only the read model it would otherwise
start from."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any
from uuid import UUID

from eventsourcing.domain import DomainEvent
from eventsourcing.utils import get_topic

from application.event_store import NornEventStore
from application.ports import ConnectionReference, RequestFacts, SecretReference
from domain.pipeline import PipelineCreated, PipelineDeleted, PipelineRevised, PipelineRolledBack
from infrastructure.mapper import decode_state
from infrastructure.secret_store import MasterKeys, new_data_key, open_value, seal_value
from projections.usage import RESOURCES, Counted


def memory_store(cache: bool = False) -> NornEventStore:
    """`cache`: with the repository's cache of aggregates, fast-forwarded on each get,
    as infrastructure/postgres.py configures it."""
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.popo",
        "MAPPER_TOPIC": "infrastructure.mapper:MsgspecMapper",
    }
    if cache:
        env |= {"AGGREGATE_CACHE_MAXSIZE": "1000", "AGGREGATE_CACHE_FASTFORWARD": "y"}
    store = NornEventStore(env=env)
    _keep_appends(store)
    return store


def _keep_appends(store: NornEventStore) -> None:
    """NornEventStore.appends as infrastructure/postgres.py answers it from the events'
    transactions, which the in-memory store does not have: each append's events are
    noted with the versions their aggregates reached and the append's last position."""
    appends: dict[tuple[UUID, int], tuple[int, int]] = {}
    append = store.append

    def noting(*aggregates: Any, precondition: bool = False) -> int | None:
        events = pending_events(aggregates)
        position = append(*aggregates, precondition=precondition)
        last: dict[UUID, int] = {}  # each aggregate's version after the append
        for event in events:
            known = last.get(event.originator_id, 0)
            last[event.originator_id] = max(known, event.originator_version)
        for event in events:
            key = (event.originator_id, event.originator_version)
            appends[key] = (last[event.originator_id], position or 0)
        return position

    store.append = noting  # type: ignore[method-assign]
    store.appends = lambda aggregate_id, version: appends.get((aggregate_id, version))


def pending_events(objs: Sequence[Any]) -> list[Any]:
    """The events an append of `objs` (aggregates, or events collected from them) saves."""
    events: list[Any] = []
    for obj in objs:
        if isinstance(obj, DomainEvent):
            events.append(obj)
        elif obj is not None:
            events.extend(obj.pending_events)
    return events


class StoreUsage:
    """application.ports.Usage and RequestFactsReader over an in-memory store."""

    def __init__(self, store: NornEventStore, resources: Mapping[str, Counted] = RESOURCES):
        self._store = store
        self._resources = resources
        self._locks: dict[str, threading.Lock] = {}
        self.count_calls = 0

    def _events(self) -> Iterator[tuple[str, dict[str, Any]]]:
        for n in self._store.recorder.select_notifications(start=None, limit=1_000_000):  # type: ignore[attr-defined]
            yield n.topic, decode_state(n.state) | {"_originator": n.originator_id}

    def count(self, tenant_id: str, resource: str) -> int | None:
        self.count_calls += 1
        counted = self._resources.get(resource)
        if counted is None:
            return None
        deltas = {get_topic(cls): delta for cls, delta in counted.deltas.items()}
        used = 0
        for topic, state in self._events():
            delta = deltas.get(topic)
            if delta is not None and state.get("tenant_id") == tenant_id:
                used += delta if isinstance(delta, int) else delta(state)
        return used

    @contextmanager
    def namespace_hold(self, tenant_id: str, namespace: str, *, exclusive: bool) -> Iterator[None]:
        with self._locks.setdefault(f"namespace:{tenant_id}:{namespace}", threading.Lock()):
            yield

    @contextmanager
    def namespaces_hold(self, places: Sequence[tuple[str, str]]) -> Iterator[None]:
        with contextlib.ExitStack() as held:
            for tenant_id, namespace in sorted(set(places)):
                held.enter_context(self.namespace_hold(tenant_id, namespace, exclusive=False))
            yield

    def in_namespace(self, tenant_id: str, namespace: str) -> int:
        placing = {get_topic(c) for c in (PipelineCreated, PipelineRevised, PipelineRolledBack)}
        placed: dict[Any, bool] = {}
        for topic, state in self._events():
            if state.get("tenant_id") != tenant_id:
                continue
            if topic in placing:
                definition = state.get("definition") or {}
                placed[state["_originator"]] = definition.get("namespace") == namespace
            elif topic == get_topic(PipelineDeleted):
                placed[state["_originator"]] = False
        return sum(placed.values())

    def read(self, aggregate_ids: Sequence[UUID]) -> RequestFacts:
        versions = {i: a.version for i, a in self._store.current(*aggregate_ids).items()}
        return RequestFacts(versions=versions)


class MemorySecretValues:
    """application/ports.py `SecretValues` in dicts, with the production cipher
    (infrastructure/secret_store.py), so that tests of the service exercise the real
    envelope encryption and crypto-shredding. `keys` and `values` are what the database
    would hold."""

    def __init__(self, master: MasterKeys) -> None:
        self.master = master
        self.keys: dict[UUID, tuple[str, bytes, bytes]] = {}
        self.values: dict[UUID, tuple[UUID, int, bytes, bytes]] = {}

    def seal(
        self,
        secret_id: UUID,
        tenant_id: str,
        version: int,
        value_id: UUID,
        value: str,
        *,
        new_key: bool,
    ) -> bool:
        if new_key and secret_id not in self.keys:
            self.keys[secret_id] = self.master.wrap(secret_id, new_data_key())
        wrapped = self.keys.get(secret_id)
        data_key = None if wrapped is None else self.master.unwrap(secret_id, *wrapped)
        if data_key is None:
            return False
        nonce, sealed = seal_value(data_key, secret_id, version, value_id, value)
        self.values[value_id] = (secret_id, version, nonce, sealed)
        return True

    def open(self, secret_id: UUID, version: int, value_id: UUID) -> str | None:
        row, wrapped = self.values.get(value_id), self.keys.get(secret_id)
        if row is None or wrapped is None or row[:2] != (secret_id, version):
            return None
        data_key = self.master.unwrap(secret_id, *wrapped)
        if data_key is None:
            return None
        return open_value(data_key, secret_id, version, value_id, row[2], row[3])

    def destroy(self, secret_id: UUID) -> None:
        self.keys.pop(secret_id, None)
        for value_id in [v for v, row in self.values.items() if row[0] == secret_id]:
            del self.values[value_id]


class MemorySecretReferences:
    """Which pipelines reference which secret, as a test sets it."""

    def __init__(self) -> None:
        self.refs: dict[tuple[str, str], list[SecretReference]] = {}

    def referencing(self, tenant_id: str, name: str) -> list[SecretReference]:
        return self.refs.get((tenant_id, name), [])


class MemoryConnectionReferences:
    """Which pipelines use which connection, as a test sets it."""

    def __init__(self) -> None:
        self.refs: dict[tuple[str, str], list[ConnectionReference]] = {}

    def referencing(self, tenant_id: str, name: str) -> list[ConnectionReference]:
        return self.refs.get((tenant_id, name), [])
