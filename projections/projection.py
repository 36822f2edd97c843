"""What a projection is, and how one batch of events is applied to its read model.

A projection owns some tables and one row in `projection_tracking`. A batch that has
something to apply is applied in ONE transaction that locks the tracking row, skips every
event at or below the tracked position, runs the handlers and moves the tracking row to
the batch's highest position. Read-model change and position commit together, so a crash
or a redelivery can neither double-apply nor skip an event (docs/architecture.md §6), and two
processes applying the same projection at once are serialised by the row lock instead of
corrupting each other. A batch with nothing to apply needs no transaction at all: see
projections/positions.py for how the position it passes is kept and persisted.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import Any, ClassVar

import msgspec
import psycopg
from psycopg import AsyncConnection, AsyncCursor
from psycopg.pq import TransactionStatus
from psycopg.types.json import Jsonb

from infrastructure.envelope import CloudEvent

Handler = Callable[[AsyncCursor[Any], CloudEvent], Awaitable[None]]

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_HANDLES_ATTR = "_projection_handles"


def handles(*event_types: str) -> Callable[[Handler], Handler]:
    """Mark a projection method as the handler of CloudEvents types, e.g.
    `@handles("norn.pipeline.created.v1")`."""

    def mark(method: Handler) -> Handler:
        setattr(method, _HANDLES_ATTR, (*getattr(method, _HANDLES_ATTR, ()), *event_types))
        return method

    return mark


class Projection:
    """Base of every read model. Subclasses set `name` and `tables` and mark handlers
    with `@handles(...)`. Handlers get a cursor inside the batch transaction and must
    write only the projection's own tables, by unqualified name: a rebuild runs the same
    handlers with `search_path` pointing at shadow copies of those tables."""

    name: ClassVar[str]
    """Tracking key, also used in consumer, lock and rebuild-schema names."""
    tables: ClassVar[tuple[str, ...]]
    """Tables the projection owns (and a rebuild replaces)."""
    pipelined: ClassVar[bool] = True
    """Whether a batch's handler statements are sent without waiting for each one's
    answer (psycopg's pipeline mode), so a batch of N events costs no round trip of its
    own (its statements go with the COMMIT) rather than N or more. Under a burst of
    commands every round trip waits for a busy PostgreSQL and a busy event loop, and a
    read model that paid one per statement fell behind by the whole burst
    (bench/commands.py [4]). Set False for a projection whose handlers read a result
    (the deployments' activation): its statements wait for their answers, after every
    pipelined projection's."""
    _handler_names: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        found: dict[str, str] = {}
        # Walk the MRO base-first so a subclass can override a handler by redefining
        # the method (looked up by name on the instance, see handler()).
        for klass in reversed(cls.__mro__):
            for attr, value in vars(klass).items():
                for event_type in getattr(value, _HANDLES_ATTR, ()):
                    found[event_type] = attr
        cls._handler_names = found
        name = getattr(cls, "name", None)
        if name is not None and not _NAME.match(name):
            # The name ends up in SQL identifiers (schema rebuild_<name>) and NATS
            # durable names, so keep it to a safe alphabet.
            raise ValueError(f"projection name {name!r} must match {_NAME.pattern}")

    @property
    def event_types(self) -> frozenset[str]:
        return frozenset(self._handler_names)

    def handler(self, event_type: str) -> Handler | None:
        attr = self._handler_names.get(event_type)
        return getattr(self, attr) if attr else None

    async def apply_events(self, cur: AsyncCursor[Any], events: Sequence[CloudEvent]) -> None:
        """Apply a batch's fresh events (above the tracked position, in position order)
        with their handlers. A projection that can write a whole batch in fewer
        statements overrides it (projections/audit_log.py: one statement, not one per
        event); its handlers stay what decides which events it has work for."""
        for event in events:
            handler = self.handler(event.type)
            if handler is not None:
                await handler(cur, event)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


async def tracked_position(conn: AsyncConnection[Any], name: str) -> int:
    """The projection's position without locking (0 when it never ran)."""
    cur = await conn.execute("SELECT position FROM projection_tracking WHERE name = %s", (name,))
    row = await cur.fetchone()
    return int(row[0]) if row else 0


_MOVE_TRACKING = """
WITH old AS (
  SELECT name, position FROM projection_tracking WHERE name = ANY(%(names)s)
   ORDER BY name FOR UPDATE),
moved AS (
  UPDATE projection_tracking t SET position = want.position, updated_at = now()
    FROM old JOIN unnest(%(names)s::text[], %(to)s::bigint[]) AS want (name, position)
         USING (name)
   WHERE t.name = old.name AND old.position < want.position)
SELECT name, position FROM old
"""
"""Lock the batch's tracking rows (in name order: two transactions that lock several
never wait on each other in a cycle), move each to where the batch will leave it (unless
it is there already: a redelivered batch changes nothing), and answer where each was:
one statement, not a locking read and an update per projection. FOR UPDATE in the CTE
reads a row as the transaction that held it last left it (READ COMMITTED re-reads a row
it had to wait for), so a batch never applies what another batch applied meanwhile; if a
handler fails, the moves roll back with everything else."""


_MOVE_TRACKING_FROM_FLOORS = """
WITH old AS (
  SELECT name, position FROM projection_tracking WHERE name = ANY(%(names)s)
   ORDER BY name FOR UPDATE),
want AS (
  SELECT * FROM unnest(%(names)s::text[], %(to)s::bigint[], %(floors)s::bigint[])
    AS w (name, position, floor)),
moved AS (
  UPDATE projection_tracking t SET position = want.position, updated_at = now()
    FROM old JOIN want USING (name)
   WHERE t.name = old.name AND old.position < want.position)
SELECT norn_expect_tracking(
  (SELECT count(*) FROM old JOIN want USING (name) WHERE old.position <= want.floor)
  = cardinality(%(names)s::text[]))
"""
"""_MOVE_TRACKING when the batch's floors are known to be where the rows are or beyond
(the rows lag a runner's positions: see persist_positions): the same move, and nothing
to answer but a refusal (norn_expect_tracking, SQLSTATE NR001) if a row is missing or
another transaction moved it past its floor."""

_FLOORS_WRONG = "NR001"


async def _move_tracking_rows(cur: AsyncCursor[Any], to: Mapping[str, int]) -> dict[str, int]:
    """Lock the projections' tracking rows for this transaction, move each to at least
    `to[name]`, and return where each was. The locks are what serialise batches from any
    process and make a rebuild's swap wait for (and be seen by) the live runner."""
    names = sorted(to)
    params = {"names": names, "to": [to[name] for name in names]}
    await cur.execute(_MOVE_TRACKING, params)
    was = {name: int(position) for name, position in await cur.fetchall()}
    if len(was) < len(names):
        # A projection's first batch ever: create its row (racing creators are fine),
        # then lock and move that one.
        missing = [name for name in names if name not in was]
        # On a cursor of its own: in pipeline mode its answer could otherwise be taken
        # for the move's.
        await cur.connection.execute(
            "INSERT INTO projection_tracking (name, position)"
            " SELECT unnest(%s::text[]), 0 ON CONFLICT (name) DO NOTHING",
            (missing,),
        )
        await cur.execute(_MOVE_TRACKING, {"names": missing, "to": [to[n] for n in missing]})
        was.update((name, int(position)) for name, position in await cur.fetchall())
    return was


def json_rows(rows: list[dict[str, Any]]) -> Jsonb:
    """Rows as one jsonb parameter, for `INSERT … SELECT … FROM jsonb_populate_recordset(
    NULL::<table>, %s)`: a batch's rows in one statement whose parameter msgspec encodes
    in C. An array parameter per column is dumped value by value in Python: the audit
    log's were an eighth of the projector's time in a scheduler's burst."""
    return Jsonb(rows, dumps=_encode_json)


def _encode_json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def has_work(projection: Projection, events: Sequence[CloudEvent], floor: int) -> bool:
    """Whether any event above `floor` has a handler: only then is a transaction needed.
    Any other event only moves the position, which may be persisted later."""
    return any(
        event.position > floor and projection.handler(event.type) is not None for event in events
    )


async def apply_batch(
    conn: AsyncConnection[Any],
    projection: Projection,
    events: Sequence[CloudEvent],
    *,
    floor: int = 0,
) -> int:
    """Apply `events` (in position order) in one transaction; return the tracked position
    after commit. Safe to call with events already applied: they are skipped. `floor` is
    a position the caller knows to be passed (applied, or without a handler) but perhaps
    not persisted yet: events at or below it are skipped too, and it is persisted."""
    [position] = await apply_batches(conn, [(projection, floor)], events)
    return position


async def apply_batches(
    conn: AsyncConnection[Any],
    members: Sequence[tuple[Projection, int]],
    events: Sequence[CloudEvent],
    *,
    rows_at_floors: bool = False,
) -> list[int]:
    """`apply_batch` for several projections (each with its `floor`) in ONE transaction:
    a batch with work for several read models (a create: its pipeline and the audit log)
    commits once, not once each. All or none: a caller that must keep one projection's
    failure from the others applies them one by one after a failure
    (projections/members.py). Returns each projection's tracked position, in order.

    On an autocommit connection outside a transaction (every runner's), one round trip
    when the caller knows the rows exist at or below the floors (`rows_at_floors`), as a
    steady runner does (its floors are its own positions): `_moved_from_floors`; should
    another transaction have moved a row meanwhile, that is refused and the batch goes
    the other way. Else two: BEGIN with the tracking rows' move (whose
    answer says which events are fresh), then the pipelined projections' statements with
    the COMMIT, in psycopg's pipeline mode (`Projection.pipelined`). Under load a round
    trip waits for a busy PostgreSQL and a busy event loop: `conn.transaction()` (a sync
    after BEGIN and another before COMMIT) and a move per read model made a create's
    batch five. Inside a caller's transaction (a rebuild's swap, which must stay one
    transaction) the batch is a savepoint of it instead."""
    top = max((event.position for event in events), default=0)
    # Where the batch leaves each row: its last event (ignored types advance the position
    # too, or min_position waits on a filtered projection would time out,
    # docs/architecture.md §6), or the floor, whichever is further.
    to = {projection.name: max(floor, top) for projection, floor in members}
    if not conn.autocommit or conn.info.transaction_status != TransactionStatus.IDLE:
        async with conn.transaction(), conn.cursor() as cur:
            work, at = _fresh(members, events, await _move_tracking_rows(cur, to))
            async with conn.pipeline():
                await _apply_work(cur, work, pipelined=True)
            await _apply_work(cur, work, pipelined=False)
        return [at[projection.name] for projection, _ in members]
    try:
        async with conn.cursor() as cur:
            if rows_at_floors:
                try:
                    at = await _in_pipeline(
                        conn, cur, partial(_moved_from_floors, conn, members, events, to)
                    )
                except psycopg.Error as error:
                    if error.sqlstate != _FLOORS_WRONG:
                        raise
                    await conn.rollback()
                else:
                    return [at[projection.name] for projection, _ in members]
            at = await _in_pipeline(conn, cur, partial(_moved_on_rows, cur, members, events, to))
    except BaseException:
        # The transaction is open (failed, or cut short by a cancel): end it before the
        # connection goes back to a pool.
        if not conn.closed and conn.info.transaction_status != TransactionStatus.IDLE:
            await conn.rollback()
        raise
    return [at[projection.name] for projection, _ in members]


Work = list[tuple[Projection, list[CloudEvent]]]
"""Each projection of a batch with its fresh events."""


async def _in_pipeline(
    conn: AsyncConnection[Any],
    cur: AsyncCursor[Any],
    move: Callable[[], Awaitable[tuple[Work, dict[str, int]]]],
) -> dict[str, int]:
    """One transaction in pipeline mode: BEGIN, the tracking rows' move (`move`: it
    answers each projection's fresh events and where the batch leaves its row), the
    pipelined projections' statements and COMMIT. A projection whose handlers read a
    result (the deployments') runs after the pipeline, before the COMMIT, where the result
    a cursor holds is its last statement's own."""
    async with conn.pipeline():
        await conn.execute("BEGIN")  # a cursor of its own: its answer is not read
        work, at = await move()
        await _apply_work(cur, work, pipelined=True)
        reading = any(not p.pipelined and fresh for p, fresh in work)
        if not reading:
            await conn.execute("COMMIT")
    if reading:
        await _apply_work(cur, work, pipelined=False)
        await conn.execute("COMMIT")
    return at


async def _moved_on_rows(
    cur: AsyncCursor[Any],
    members: Sequence[tuple[Projection, int]],
    events: Sequence[CloudEvent],
    to: Mapping[str, int],
) -> tuple[Work, dict[str, int]]:
    """The move whose answer (where each row was) says which events are fresh: the
    pipeline waits for it, so the batch is two round trips."""
    return _fresh(members, events, await _move_tracking_rows(cur, to))


async def _moved_from_floors(
    conn: AsyncConnection[Any],
    members: Sequence[tuple[Projection, int]],
    events: Sequence[CloudEvent],
    to: Mapping[str, int],
) -> tuple[Work, dict[str, int]]:
    """The move on the callers' floors as where the rows are, nothing to wait for: the
    batch is ONE round trip. It refuses the whole (psycopg.Error with SQLSTATE NR001, the
    transaction failed) if a row is missing or past its floor (a rebuild's swap, another
    leader meanwhile)."""
    names = sorted(to)
    floors = {projection.name: floor for projection, floor in members}
    await conn.execute(
        _MOVE_TRACKING_FROM_FLOORS,
        {"names": names, "to": [to[n] for n in names], "floors": [floors[n] for n in names]},
    )
    return _fresh(members, events, floors)


def _fresh(
    members: Sequence[tuple[Projection, int]],
    events: Sequence[CloudEvent],
    was: Mapping[str, int],
) -> tuple[Work, dict[str, int]]:
    """Each projection's events above its row (as it was) and its floor, and the
    position the batch leaves it at."""
    work: Work = []
    at: dict[str, int] = {}
    for projection, floor in members:
        position = max(was[projection.name], floor)
        fresh = []
        for event in events:
            # <= rather than a set of seen ids: positions only grow, and a redelivered
            # or re-published event (or a duplicate within the batch) is at or below it.
            if event.position > position:
                fresh.append(event)
                position = event.position
        work.append((projection, fresh))
        at[projection.name] = position
    return work, at


async def _apply_work(cur: AsyncCursor[Any], work: Work, *, pipelined: bool) -> None:
    """Run the handlers of `work`'s pipelined projections, or of the others."""
    for projection, fresh in work:
        if projection.pipelined == pipelined:
            await projection.apply_events(cur, fresh)


async def persist_positions(conn: AsyncConnection[Any], positions: Mapping[str, int]) -> None:
    """Record that projections have passed these positions without applying anything,
    in one autocommit statement (no row lock held across a round trip). Never moves a
    row back: a batch or a rebuild's swap may have moved it further meanwhile."""
    await conn.execute(
        "INSERT INTO projection_tracking AS t (name, position)"
        " SELECT * FROM unnest(%s::text[], %s::bigint[])"
        " ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position, updated_at = now()"
        " WHERE t.position < EXCLUDED.position",
        (list(positions), list(positions.values())),
    )
