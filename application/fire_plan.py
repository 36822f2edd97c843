"""What a scheduler pass does with one job: which nominal fire times to run now, and which
were skipped (overlap) or missed (misfire). Pure: no I/O and no clock; the caller passes
`now` and whether the job's previous run is still active, and keeps the `FireState`.

A nominal time t (application/schedule.py's, UTC, whole seconds) is *due* once
t + jitter <= now, and is dealt with by the first pass after that, exactly once: the
state's cursor is the latest time dealt with, and a pass scans only the times after it.

* Misfire: a due time is *missed* when t + jitter < now - grace (no scheduler got to it
  in time), or when t + jitter < the state's `active_since` (it fell due while the job
  was disabled or its tenant suspended: the grace is for a late scheduler, not for a job
  that was off; re-enabling one that fires every 10 s fired the last minute's six
  times). `skip` runs none of them;
  `run_once` runs the latest; `run_all` runs the oldest `max_catchup`. Each missed time
  not run is counted `missed`. The other due times are on time (maybe `late`).
* Overlap, judged against the run active before the pass (the runs one pass queues,
  catch-up included, go together and are not judged against each other): when the
  previous run is not active, everything fires. Else `allow` fires; `skip` counts each
  `skipped`; `queue_one` keeps the latest waiting (`waiting_for`) when none waits yet and
  counts the rest `skipped`; `cancel_previous` fires and asks the previous run to stop.
* A waiting fire waits as long as the previous run is active, whatever the policy became
  since, and fires first in the first pass that finds it ended. `next_due` does not name
  it: the caller plans again when the previous run ends (or polls).
* `late`: fires queued more than LATE_AFTER after t + jitter. `refused` (quota,
  suspension) is decided by whoever appends the run, not here.
* A scan reads at most `scan_limit` times; `more` says plan again at once. The missed
  window is one whatever the scans: `run_all` carries how many of it it ran
  (`caught_up`), and `run_once` leaves the latest time scanned to the next scan (its
  cursor stops just before it) while the window may go on.
* Exactly once: `fire_run_id` derives the run's id from (job, nominal time), the same on
  every scheduler, so the event store refuses a second run for the same time.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from application.schedule import Schedule
from domain.job import JobSpec

LATE_AFTER = timedelta(seconds=1)
DEFAULT_GRACE = timedelta(seconds=60)

_RUN_IDS = uuid.UUID("675f020b-cae7-48bb-b7cf-02286d0bdcd2")
"""The uuid5 namespace of the ids of scheduled runs."""
_TICK = timedelta(microseconds=1)


@dataclass(frozen=True)
class FireState:
    """A job's fire bookkeeping between passes (kept by the scheduler, outside the job's
    events)."""

    cursor: datetime
    """Every nominal time <= cursor has been dealt with (fired, skipped or missed)."""
    waiting_for: datetime | None = None
    """queue_one: the nominal time of the one fire waiting for the previous run to end."""
    caught_up: int = 0
    """run_all: missed times run so far from a missed window whose scan goes on (`more`)."""
    active_since: datetime | None = None
    """Since when the job may fire: the later of its last enabling and its tenant's last
    reactivation (the read models'; None where they do not know)."""


@dataclass(frozen=True)
class FirePlan:
    fires: tuple[datetime, ...]
    """Nominal times to queue a run for now, oldest first (a waiting fire first)."""
    skipped: int
    """Overlap: due times not run because the previous run is active."""
    missed: int
    """Misfire: due times past the grace not run, per the policy."""
    late: int
    """How many of `fires` are queued more than LATE_AFTER after time + jitter."""
    cancel_previous: bool
    """cancel_previous: ask the active previous run to stop first."""
    state: FireState
    """The bookkeeping after this plan is carried out."""
    more: bool
    """The scan stopped at its limit: plan again at once (the cursor is the last time
    scanned; run_once's, in a missed window, the one before it)."""


def plan_fires(
    spec: JobSpec,
    schedule: Schedule,
    jitter: float,
    state: FireState,
    now: datetime,
    previous_active: bool,
    *,
    grace: timedelta = DEFAULT_GRACE,
    scan_limit: int = 10_000,
) -> FirePlan:
    """The fires of one pass at `now` (aware), per the module docstring's rules."""
    if not isinstance(now, datetime) or now.utcoffset() is None:
        raise ValueError(f"now must be a datetime with a timezone: got {now!r}")
    if jitter < 0 or grace < timedelta(0):
        raise ValueError(f"jitter and grace must not be negative: got {jitter!r}, {grace!r}")
    if scan_limit < 2:  # run_once holds back one time per scan: it needs two to progress
        raise ValueError(f"scan_limit must be 2 or more: got {scan_limit!r}")
    offset = timedelta(seconds=jitter)
    due = schedule.fires_between(state.cursor + _TICK, now - offset, scan_limit)
    more = len(due) == scan_limit
    # Missed times come first: t + jitter < now - grace holds for a prefix of `due`.
    miss_bound = now - grace - offset
    if state.active_since is not None:
        miss_bound = max(miss_bound, state.active_since - offset)
    n_missed = next((i for i, t in enumerate(due) if t >= miss_bound), len(due))
    missed_times, on_time = due[:n_missed], due[n_missed:]
    window_goes_on = more and not on_time  # the next scan may find more of this window
    cursor = due[-1] if due else state.cursor
    caught_up = 0
    if spec.misfire_policy == "run_once":
        if window_goes_on:  # its latest missed time may lie beyond: leave the last to it
            missed_times, cursor = missed_times[:-1], missed_times[-2]
            picked: list[datetime] = []
        else:
            picked = missed_times[-1:]
    elif spec.misfire_policy == "run_all":
        picked = missed_times[: max(spec.max_catchup - state.caught_up, 0)]
        caught_up = state.caught_up + len(picked) if window_goes_on else 0
    else:
        picked = []
    missed = len(missed_times) - len(picked)
    candidates = picked + on_time

    fires: list[datetime] = []
    waiting = state.waiting_for
    if waiting is not None and not previous_active:
        fires.append(waiting)
        waiting = None
    skipped = 0
    cancel = False
    policy = spec.overlap_policy
    if not previous_active or policy == "allow":
        fires += candidates
    elif policy == "cancel_previous":
        fires += candidates
        cancel = bool(candidates)
    elif policy == "queue_one" and waiting is None and candidates:
        waiting = candidates[-1]
        skipped = len(candidates) - 1
    else:  # skip, or queue_one with one waiting already
        skipped = len(candidates)
    late = sum(1 for t in fires if now - (t + offset) > LATE_AFTER)
    return FirePlan(
        fires=tuple(fires),
        skipped=skipped,
        missed=missed,
        late=late,
        cancel_previous=cancel,
        state=FireState(cursor, waiting, caught_up, state.active_since),
        more=more,
    )


def next_due(schedule: Schedule, jitter: float, state: FireState) -> datetime | None:
    """When the job next needs a pass: its first nominal time after the cursor, plus
    jitter; None when none is left (past end_at). A waiting queue_one fire is not
    counted: it is due when the previous run ends, which the caller watches."""
    after = schedule.next_fire(state.cursor)
    return None if after is None else after + timedelta(seconds=jitter)


def fire_run_id(job_id: str, scheduled_for: datetime) -> uuid.UUID:
    """The id of the run of `job_id` for the nominal time `scheduled_for` (aware): the same
    on every scheduler and for the same instant in any timezone, so that the event store
    refuses a second run for the same (job, time)."""
    if not isinstance(scheduled_for, datetime) or scheduled_for.utcoffset() is None:
        raise ValueError(f"scheduled_for must have a timezone: got {scheduled_for!r}")
    return uuid.uuid5(_RUN_IDS, f"{job_id}:{scheduled_for.astimezone(UTC).isoformat()}")
