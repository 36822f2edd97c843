"""The calendar of scheduled jobs: when a cron expression in an IANA timezone fires.

Pure computation, no I/O, and the one place that knows these rules. croniter generates
the wall-clock times the expression names, on naive local datetimes so it never sees a
daylight saving transition; zoneinfo then maps each wall time to instants, by these rules:

* A *wall-clock* job names particular hours (`30 2 * * *`, `0 */2 * * *`, `@daily`) and
  follows the clock on the wall:
  - a local time that does not exist (the spring-forward gap) fires once, at the first
    instant after the gap: 02:30 America/New_York on 2027-03-14 fires at 03:00 EDT. All
    the times in one gap, and a regular fire time at the gap's end, are that one fire;
  - a local time that happens twice (fall back) fires once, at its first occurrence.
* An *elapsed-time* job has `*` for hours (also spelt `0-23` or `*/1`: croniter expands
  all three alike), as in `*/15 * * * *`, `30 * * * *`, `@hourly`, `* * * * * */10`, and
  follows elapsed time:
  - a local time in a gap does not fire: the clock skipped it (hourly at :30 fires at
    01:30 EST, then 03:30 EDT);
  - a repeated local time fires at both occurrences, as elapsed time passes twice through
    that hour (`*/15` fires 8 times in the repeated hour).

So minute and second steps follow elapsed time, hour steps the wall clock. Expressions
have 5 fields, or 6 with seconds last (croniter's convention), or are one of croniter's
shortcuts. Every instant returned is aware UTC on a whole second.
"""

from __future__ import annotations

import hashlib
import heapq
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property, lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter

from domain.job import JobSpec

MAX_JITTER_SECONDS = 3600
SHORTCUTS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")

_FIELDS = re.compile(r"\S+", re.ASCII)  # croniter's own split: not on Unicode spaces
# croniter's H (hashed) and R (random) values: H needs an id we do not give it, and R
# would fire at different times in every process.
_HASHED = re.compile(r"[hr](\(\d+-\d+\))?(/\d+)?", re.ASCII | re.IGNORECASE)
# IANA names are ASCII segments joined by "/": no "..", no leading "/", no backslash.
_ZONE_NAME = re.compile(r"[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*", re.ASCII)
_HOST_FILES = frozenset({"localtime", "posixrules"})  # in the zoneinfo directory, not zones
_HOUR = 1  # croniter's index of the hour field, in 6-field expressions too
# tzdata's transitions lie days apart and a fold lasts at most 23 hours (Kwajalein 1969):
# the offset a day ahead says whether, and by how much, the clock falls back before then.
_LOOKAHEAD = timedelta(hours=24)
# The most candidates a scan reads beyond `limit`: a day of every-second wall times, more
# than a gap or fold can swallow (they are at most a day long).
_SCAN_SLACK = 100_000
_SECOND = timedelta(seconds=1)
_TICK = timedelta(microseconds=1)


class ScheduleError(ValueError):
    """A bad cron expression, timezone or bound; `.field` names it ("cron_expr",
    "timezone", "start_at", "end_at", "jitter_seconds")."""

    def __init__(self, message: str, field: str) -> None:
        self.field = field
        super().__init__(message)


@dataclass(frozen=True)
class _Plan:
    zone: ZoneInfo
    elapsed: bool  # an elapsed-time job (see the module docstring)


@dataclass(frozen=True)
class Schedule:
    cron_expr: str
    timezone: str = "UTC"
    jitter_seconds: int = 0
    start_at: datetime | None = None  # aware; no fire before it
    end_at: datetime | None = None  # aware; no fire after it (inclusive bound)

    def check(self) -> None:
        """Raise ScheduleError naming the first bad field."""
        self._plan  # noqa: B018 (the cron expression and timezone, checked once)
        jitter = self.jitter_seconds
        if isinstance(jitter, bool) or not isinstance(jitter, int):
            raise ScheduleError(
                f"jitter_seconds must be an integer: got {jitter!r}", "jitter_seconds"
            )
        if not 0 <= jitter <= MAX_JITTER_SECONDS:
            raise ScheduleError(
                f"jitter_seconds must be from 0 to {MAX_JITTER_SECONDS}: got {jitter}",
                "jitter_seconds",
            )
        for name in ("start_at", "end_at"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, datetime) or value.utcoffset() is None):
                raise ScheduleError(
                    f"{name} must be a datetime with a timezone (UTC): got {value!r}", name
                )
        if self.start_at is not None and self.end_at is not None and self.end_at < self.start_at:
            raise ScheduleError(
                f"end_at ({self.end_at.isoformat()}) is before start_at "
                f"({self.start_at.isoformat()})",
                "end_at",
            )

    def fires_after(self, after: datetime, limit: int) -> list[datetime]:
        """The next nominal fire times strictly after `after`, ascending, at most `limit`."""
        return self._fires(_aware(after, "after"), None, limit)

    def fires_between(self, start: datetime, end: datetime, limit: int) -> list[datetime]:
        """The nominal fire times t with start <= t <= end, ascending, at most `limit`."""
        # Fire times are whole seconds, so t >= start exactly when t > start - 1 µs.
        return self._fires(_aware(start, "start") - _TICK, _aware(end, "end"), limit)

    def next_fire(self, after: datetime) -> datetime | None:
        """The first fire time strictly after `after`, or None when there is none (past
        end_at, or an expression that never fires)."""
        fires = self.fires_after(after, 1)
        return fires[0] if fires else None

    def ever_fires(self) -> bool:
        """Whether any date matches the expression at all (`0 0 30 2 *`: none), bounds
        aside: a job on one would never run, which its writer is told at once. (Stored
        ones still plan to nothing, fast: test_schedule.py.)"""
        self.check()
        try:  # from a leap year on: croniter searches 50 years, 29 February included
            croniter(self.cron_expr, datetime(2000, 1, 1)).get_next(datetime)
        except CroniterBadDateError:
            return False
        return True

    def local(self, instant: datetime) -> datetime:
        """`instant` in the schedule's timezone."""
        self.check()
        return _aware(instant, "instant").astimezone(self._plan.zone)

    def jitter(self, job_id: str) -> float:
        """A deterministic offset in [0, jitter_seconds] seconds for this job: the same in
        every process (sha256, not hash(), which is salted per process)."""
        self.check()
        if self.jitter_seconds == 0:
            return 0.0
        digest = hashlib.sha256(job_id.encode()).digest()
        # 53 bits, a float's precision, so the fraction is exact and below 1.
        fraction = (int.from_bytes(digest[:8], "big") >> 11) / (1 << 53)
        return fraction * self.jitter_seconds

    @cached_property
    def _plan(self) -> _Plan:
        elapsed = _elapsed(self.cron_expr)  # the expression is checked first
        return _Plan(zone=_zone(self.timezone), elapsed=elapsed)

    def _fires(self, after: datetime, until: datetime | None, limit: int) -> list[datetime]:
        # Jobs on one calendar mostly ask the same question in a pass (their cursors are
        # the same last fire time): answered once (a fresh list each time).
        return list(_fires_of(self, after, until, limit))

    def _compute_fires(
        self, after: datetime, until: datetime | None, limit: int
    ) -> tuple[datetime, ...]:
        self.check()
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ValueError(f"limit must be an integer >= 0: got {limit!r}")
        if self.start_at is not None:
            after = max(after, self.start_at - _TICK)
        if self.end_at is not None:
            until = self.end_at if until is None else min(until, self.end_at)
        fires: list[datetime] = []
        if limit == 0 or (until is not None and until <= after):
            return tuple(fires)
        for instant in self._instants(after, limit + _SCAN_SLACK):
            if until is not None and instant > until:
                break
            fires.append(instant)
            if len(fires) == limit:
                break
        return tuple(fires)

    def _instants(self, after: datetime, budget: int) -> Iterator[datetime]:
        """Fire instants strictly after `after`, ascending, without repeats, from at most
        `budget` candidate wall times (stopping early leaves a true prefix)."""
        plan = self._plan
        after = after.astimezone(UTC)
        # Start at the earliest wall time still to come: `after`'s own, unless the clock
        # falls back by `drop` within `drop` from now, when the fold's wall times come again.
        offset = _offset(after, plan.zone)
        drop = offset - _offset(after + _LOOKAHEAD, plan.zone)
        if drop > timedelta(0):
            offset = min(offset, _offset(after + drop, plan.zone))
        walls = _walls(self.cron_expr, after.replace(tzinfo=None) + offset)
        # From one wall time to the next the first instant never goes back, and every
        # other instant comes later than it; so the pending instants below a wall time's
        # first instant are final. (Only a fold's second occurrences wait here.)
        pending: list[datetime] = []
        last: datetime | None = None
        for _ in range(budget):
            try:
                wall = walls.get_next(datetime)
            except (CroniterBadDateError, OverflowError):
                # croniter found nothing within 50 years (`0 0 30 2 *`), or the calendar
                # ended: no wall time is left, so everything pending is final.
                break
            instants = _instants_of(wall, plan)
            while pending and instants and pending[0] < instants[0]:
                instant = heapq.heappop(pending)
                if instant != last:
                    last = instant
                    yield instant
            for instant in instants:
                if instant > after:
                    heapq.heappush(pending, instant)
        else:
            return  # the budget is spent: what is pending may not be final
        for instant in sorted(pending):
            if instant != last:
                last = instant
                yield instant


def _instants_of(wall: datetime, plan: _Plan) -> tuple[datetime, ...]:
    """The instants a naive local wall time fires at, ascending (see the module docstring)."""
    first = wall.replace(tzinfo=plan.zone)  # fold=0: the first occurrence when repeated
    instant = first.astimezone(UTC)
    if instant.astimezone(plan.zone).replace(tzinfo=None) != wall:
        # It does not exist: the round trip lands on the other side of the gap.
        return () if plan.elapsed else (_gap_end(wall, plan.zone),)
    if plan.elapsed:
        second = wall.replace(tzinfo=plan.zone, fold=1)
        if second.utcoffset() != first.utcoffset():
            return (instant, second.astimezone(UTC))
    return (instant,)


def _gap_end(wall: datetime, zone: ZoneInfo) -> datetime:
    """The first instant whose local time is later than `wall`, a time in a gap."""
    # Read with the offsets before and after the transition (fold=0 and fold=1), `wall`
    # gives two instants either side of it; halving over whole seconds finds it for any
    # size of gap (an hour in New York, 30 minutes on Lord Howe Island).
    low, high = sorted(wall.replace(tzinfo=zone, fold=f).astimezone(UTC) for f in (0, 1))
    while high - low > _SECOND:
        middle = (low + (high - low) / 2).replace(microsecond=0)
        if middle.astimezone(zone).replace(tzinfo=None) > wall:
            high = middle
        else:
            low = middle
    return high


def _elapsed(cron_expr: str) -> bool:
    """Check the expression; True when it is an elapsed-time job (hour field `*`)."""
    if not isinstance(cron_expr, str):
        raise ScheduleError(f"cron_expr must be a string: got {cron_expr!r}", "cron_expr")
    fields = _FIELDS.findall(cron_expr)
    if len(fields) == 1 and fields[0].startswith("@"):
        if fields[0].lower() not in SHORTCUTS:
            raise ScheduleError(
                f"cron_expr {fields[0]} is not supported: use 5 fields, 6 with seconds last, "
                f"or one of {', '.join(SHORTCUTS)}",
                "cron_expr",
            )
    elif len(fields) not in (5, 6):
        raise ScheduleError(
            "cron_expr must have 5 fields (minute hour day month weekday), or 6 with "
            f"seconds last: got {len(fields)}",
            "cron_expr",
        )
    elif any(_HASHED.fullmatch(field) for field in fields):
        raise ScheduleError(
            f"cron_expr {cron_expr!r}: H (hashed) and R (random) values are not supported",
            "cron_expr",
        )
    try:
        expanded, _ = croniter.expand(cron_expr)
    except (ValueError, TypeError) as error:  # croniter's errors are ValueErrors
        raise ScheduleError(
            f"cron_expr {cron_expr!r} is not a valid cron expression ({error})", "cron_expr"
        ) from None
    return expanded[_HOUR] == ["*"]


def _zone(name: str) -> ZoneInfo:
    if not isinstance(name, str) or not _ZONE_NAME.fullmatch(name) or name in _HOST_FILES:
        raise ScheduleError(
            f"timezone must be an IANA name such as 'Europe/Berlin' or 'UTC': got {name!r}",
            "timezone",
        )
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a directory ("America")
        raise ScheduleError(f"timezone {name!r} is not a known IANA timezone", "timezone") from None


def _offset(instant: datetime, zone: ZoneInfo) -> timedelta:
    # zone.utcoffset(instant) would read the instant as a local time; convert first.
    return instant.astimezone(zone).utcoffset() or timedelta(0)


def _aware(value: datetime, name: str) -> datetime:
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise ValueError(f"{name} must be a datetime with a timezone: got {value!r}")
    return value


def schedule_of(spec: JobSpec) -> Schedule:
    """A job's calendar: one shared object per distinct calendar, so that the
    expression and timezone are parsed once, not once per job and pass (10,000 jobs
    firing every minute are mostly the same few calendars)."""
    return _schedule(spec.cron_expr, spec.timezone, spec.jitter_seconds, spec.start_at, spec.end_at)


@lru_cache(maxsize=16384)
def _fires_of(
    schedule: Schedule, after: datetime, until: datetime | None, limit: int
) -> tuple[datetime, ...]:
    return schedule._compute_fires(after, until, limit)


@lru_cache(maxsize=8192)
def _schedule(
    cron_expr: str,
    timezone: str,
    jitter_seconds: int,
    start_at: datetime | None,
    end_at: datetime | None,
) -> Schedule:
    return Schedule(cron_expr, timezone, jitter_seconds, start_at, end_at)


_PARSED = threading.local()
"""Per thread: a croniter per expression, reset to each start instead of parsed again
(croniter expands the expression in its constructor: most of a scheduler pass's time
before this). Per thread because a croniter is a cursor; `_instants`, its only user,
reads one to the end of its use before the next call in the same thread."""


def _walls(cron_expr: str, start: datetime) -> croniter:
    parsed: dict[str, croniter] = _PARSED.__dict__.setdefault("walls", {})
    walls = parsed.get(cron_expr)
    if walls is None:
        if len(parsed) >= 4096:
            parsed.clear()
        walls = parsed[cron_expr] = croniter(cron_expr, start)
    else:
        walls.set_current(start, force=True)
    return walls
