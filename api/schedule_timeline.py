"""A text timeline of a tenant's next scheduled fires for terminals (GET
/api/v1/visualize/scheduler): a pure function from jobs to text, no I/O.

One line a fire, in time order: the UTC time, the job, the job's own local time and
zone, and what it runs. Text that came from users is flattened to one line of printable
characters (api/visualize.py `clean`), so a name cannot move the cursor.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from api.visualize import clean
from application.schedule import Schedule

NAME_WIDTH = 24


@dataclass(frozen=True)
class TimelineJob:
    name: str
    schedule: Schedule
    target: str
    """What a fire runs, e.g. "deployment 1f2e3d4c" or "pipeline 9a8b7c6d"."""


def render_timeline(jobs: list[TimelineJob], now: datetime, hours: int, limit: int) -> str:
    end = now + timedelta(hours=hours)
    fires = sorted(
        ((at, job) for job in jobs for at in job.schedule.fires_between(now, end, limit + 1)),
        key=lambda fire: (fire[0], fire[1].name),
    )
    shown = fires[:limit]
    lines = [
        f"Next fires {_utc(now)} .. {_utc(end)} ({hours} h), "
        f"{len(jobs)} job(s) enabled; local time of each job in brackets",
        "",
    ]
    for at, job in shown:
        local = job.schedule.local(at)
        name = clean(job.name, NAME_WIDTH).ljust(NAME_WIDTH)
        zone = clean(job.schedule.timezone, 40)
        lines.append(f"{_utc(at)}  {name}  [{local:%Y-%m-%d %H:%M:%S} {zone}]  {job.target}")
    if not shown:
        lines.append("(no fires in this window)")
    more = len(fires) - len(shown)
    if more > 0:
        lines.extend(["", f"... and at least {more} more (raise limit or shorten hours)"])
    return "\n".join(lines) + "\n"


def _utc(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%SZ")
