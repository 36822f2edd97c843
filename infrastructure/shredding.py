"""Shredding credentials stored in clear: the one deliberate exception to the store's
immutability (README "Secrets in step configs", docs/architecture.md "Shredding").

Before secret references existed, a step config could hold a credential as a plain
string (a webhook's `secret`, an `Authorization` header). Redaction (redaction.py)
keeps it out of every answer; shredding removes it from storage:

1. Every stored event carrying a definition (a pipeline's create, revise and rollback,
   a run's RunQueued) is rewritten with those values replaced by `{"redacted": true}`;
   then every other stored event that quotes one of the values (a step error of an
   old run) has it replaced by `***`. Same ids, versions, positions and types: replay,
   history and rollback work as before, reading the redacted value.
2. Read-model text that quotes a value (step errors, log lines) is masked the same way,
   and stored Idempotency-Key answers quoting one are dropped (a retry then runs again).
3. Each pipeline and run whose events changed gets a `...CredentialsShredded` event
   carrying its redacted steps, so every copy held in memory by any process (the
   repositories' caches fast-forward) stops holding the value too.
4. The NATS event stream's messages quoting a value are deleted (purge, not rewrite: a
   rewritten message would go to the end of the stream, out of order). Replays read
   the store, which holds every event.

A run of a redacted revision then fails with a clear error (step_config.py) instead
of signing or authenticating with a placeholder. Idempotent: a second pass finds
nothing to do.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import msgspec
from eventsourcing.utils import get_topic
from nats.js.errors import NotFoundError
from psycopg import Connection

from application.event_store import NornEventStore
from domain.events import CommandContext
from domain.pipeline import (
    Pipeline,
    PipelineCreated,
    PipelineRevised,
    PipelineRolledBack,
    StepSpec,
)
from domain.run import Run, RunQueued
from infrastructure.redaction import redact_steps
from infrastructure.secret_references import MASK

_DEFINITION_TOPICS = [
    get_topic(cls) for cls in (PipelineCreated, PipelineRevised, PipelineRolledBack, RunQueued)
]
_BATCH = 500
_MASKED_COLUMNS = (("run_logs", "message"), ("runs", "error"), ("run_steps", "error"))
_encode = msgspec.json.encode
_decode = msgspec.json.decode


@dataclass
class ShredReport:
    events_rewritten: int = 0
    pipelines: int = 0
    runs: int = 0
    read_model_rows: int = 0
    idempotency_answers: int = 0
    nats_messages_deleted: int = 0
    values: set[str] = field(default_factory=set, repr=False)
    """The values shredded: never shown, used to find their copies."""


def shred_stored_credentials(
    conn: Connection[Any], store: NornEventStore, ctx: CommandContext
) -> ShredReport:
    """Steps 1 to 3 (NATS is `purge_stream`). One transaction for the rewrite, so the
    store is never half rewritten; the events of step 3 are appended after it."""
    report = ShredReport()
    touched: dict[UUID, str] = {}
    with conn.transaction():
        for originator_id, version, topic, state in _definition_events(conn):
            data = _decode(state)
            steps, found = redact_steps(data["definition"]["steps"])
            if not found:
                continue
            data["definition"]["steps"] = steps
            _rewrite(conn, originator_id, version, _encode(data))
            report.values.update(found)
            report.events_rewritten += 1
            touched[originator_id] = "run" if topic == _DEFINITION_TOPICS[-1] else "pipeline"
        report.events_rewritten += _mask_quotes(conn, report.values)
        report.read_model_rows, report.idempotency_answers = _clean_tables(conn, report.values)
    for aggregate_id, kind in touched.items():
        _redact_in_memory(store, aggregate_id, kind, ctx)
    report.pipelines = sum(kind == "pipeline" for kind in touched.values())
    report.runs = len(touched) - report.pipelines
    return report


def _definition_events(conn: Connection[Any]) -> Iterable[tuple[UUID, int, str, bytes]]:
    after = 0
    while True:
        rows = conn.execute(
            "SELECT originator_id, originator_version, topic, state, notification_id"
            " FROM norn_events WHERE topic = ANY(%s) AND notification_id > %s"
            " ORDER BY notification_id LIMIT %s",
            (_DEFINITION_TOPICS, after, _BATCH),
        ).fetchall()
        if not rows:
            return
        for originator_id, version, topic, state, _ in rows:
            yield originator_id, version, topic, bytes(state)
        after = rows[-1][4]


def _rewrite(conn: Connection[Any], originator_id: UUID, version: int, state: bytes) -> None:
    conn.execute(
        "UPDATE norn_events SET state = %s WHERE originator_id = %s AND originator_version = %s",
        (state, originator_id, version),
    )


def _json_text(value: str) -> bytes:
    """The value as it appears inside a JSON string of a stored event."""
    return _encode(value)[1:-1]


def _mask_quotes(conn: Connection[Any], values: set[str]) -> int:
    """Other events quoting a value (an error message): the value becomes ***."""
    rewritten = 0
    for value in sorted(values, key=len, reverse=True):
        needle = _json_text(value)
        rows = conn.execute(
            "SELECT originator_id, originator_version, state FROM norn_events"
            " WHERE position(%s::bytea in state) > 0",
            (needle,),
        ).fetchall()
        for originator_id, version, state in rows:
            _rewrite(conn, originator_id, version, bytes(state).replace(needle, MASK.encode()))
            rewritten += 1
    return rewritten


def _clean_tables(conn: Connection[Any], values: set[str]) -> tuple[int, int]:
    rows = answers = 0
    for value in values:
        for table, column in _MASKED_COLUMNS:
            rows += conn.execute(
                f"UPDATE {table} SET {column} = replace({column}, %s, %s)"
                f" WHERE strpos({column}, %s) > 0",
                (value, MASK, value),
            ).rowcount
        answers += conn.execute(
            "DELETE FROM idempotency_keys WHERE position(%s::bytea in body) > 0",
            (_json_text(value),),
        ).rowcount
    return rows, answers


def _redact_in_memory(
    store: NornEventStore, aggregate_id: UUID, kind: str, ctx: CommandContext
) -> None:
    cls: type[Pipeline] | type[Run] = Pipeline if kind == "pipeline" else Run
    aggregate = store.find(cls, aggregate_id)
    if aggregate is None:
        return
    raw = msgspec.to_builtins(aggregate.definition.steps)
    steps, _ = redact_steps(raw)
    aggregate.shred_credentials(msgspec.convert(steps, tuple[StepSpec, ...]), ctx)
    store.append(aggregate)


async def purge_stream(js: Any, stream: str, values: set[str]) -> int:
    """Delete the stream's messages quoting any of `values`; how many."""
    if not values:
        return 0
    needles = [_json_text(v) for v in values]
    info = await js.stream_info(stream)
    deleted = 0
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            message = await js.get_msg(stream, seq)
        except NotFoundError:  # a gap: deleted or expired
            continue
        if any(needle in (message.data or b"") for needle in needles):
            await js.delete_msg(stream, seq)
            deleted += 1
    return deleted
