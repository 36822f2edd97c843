"""The PostgreSQL sessions that the projection runners of one process share.

A runner used to hold two connections of its own: a session for its leadership lock and
one to work on. Now one session holds the advisory locks of every runner in the process
(infrastructure/leadership.py, `AdvisoryLocks`; in a process that runs several roles the
relay and the executor maintenance hold theirs on it too), and runners take a connection
from a small pool only while they read the store, apply a batch or persist a position;
most batches need none (projections/positions.py).

When that session dies every runner of the process finds out at its next check (before
each batch), raises LeadershipLost and competes again on a new session. Leadership is an
efficiency measure: the tracking row is what makes two active runners harmless
(projections/projection.py).
"""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool

from infrastructure.leadership import AdvisoryLocks
from projections.positions import KeeperGroup

POOL_APPLICATION = "norn-projector"


class RunnerSessions:
    """The leadership session, the connection pool and the position writes of the
    runners of one process. A pool of three: a batch holds a connection for one
    transaction, and most batches of most runners need none; but the audit log
    (projections/audit_log.py) records every event, so its runner needs one for every
    batch, and the others keep the two they had (with two in all, the users read model
    fell behind a read right after a create in the README's walk-through)."""

    def __init__(
        self,
        database_url: str,
        *,
        max_size: int = 3,
        check_interval: float = 5.0,
        locks: AdvisoryLocks | None = None,
    ) -> None:
        """`locks`: a leadership session shared with the process's other roles (closed
        by its owner); without it the runners get one of their own."""
        self._own_locks = locks is None
        self.locks = locks or AdvisoryLocks(database_url, check_interval=check_interval)
        self.keepers = KeeperGroup()
        self.pool = AsyncConnectionPool(
            database_url,
            min_size=1,
            max_size=max_size,
            open=False,
            # Short enough that a stuck database shows up as a failed batch (and a retry)
            # well within a stop's grace period.
            timeout=10.0,
            # Connections opened for a burst are closed again soon after.
            max_idle=60.0,
            kwargs={"autocommit": True, "application_name": POOL_APPLICATION},
            name=POOL_APPLICATION,
        )

    async def open(self) -> None:
        await self.pool.open()

    async def close(self) -> None:
        if self._own_locks:
            await self.locks.close()
        await self.pool.close()
