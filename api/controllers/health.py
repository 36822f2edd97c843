from __future__ import annotations

import asyncio
from typing import Any

from litestar import Controller, Response, get
from psycopg import AsyncConnection

from api.dependencies import LivePositionsDep, NatsDep, ReadPoolDep
from infrastructure.notification_log import max_position
from projections import ALL_PROJECTIONS, LivePositions

MAX_READY_LAG = 1000
"""Events a read model may be behind and still serve queries."""
MAX_STUCK_SECONDS = 30.0
"""How long an event may wait to be projected before its read model counts as stuck."""

_OLDEST_UNPROJECTED = """
SELECT extract(epoch FROM now() - recorded_at) FROM norn_events
 WHERE notification_id > %s ORDER BY notification_id LIMIT 1
"""


class HealthController(Controller):
    path = "/health"
    opt = {"public": True}

    @get("/", summary="Liveness")
    async def health(self) -> dict[str, str]:
        return {"status": "ok"}

    @get("/live", summary="Liveness: the process is up (checks no dependency)")
    async def live(self) -> dict[str, str]:
        return {"status": "ok"}

    # answers: errors beyond what api/openapi.py infers (a public GET answers 400 only).
    @get("/ready", summary="Readiness: Postgres, NATS and projection lag", opt={"answers": (503,)})
    async def ready(
        self, read_pool: ReadPoolDep, positions: LivePositionsDep, nats: NatsDep
    ) -> Response[dict[str, Any]]:
        checks: dict[str, Any] = {}
        try:
            async with asyncio.timeout(2), read_pool.connection() as conn:
                head = await max_position(conn)
                checks["projections"] = await projections_check(conn, head, positions)
            checks["postgres"] = {"ok": True, "position": head}
        except Exception as error:
            checks["postgres"] = {"ok": False, "error": type(error).__name__}
        checks["nats"] = {"ok": bool(nats is not None and nats.is_connected)}
        ok = all(c.get("ok") for c in checks.values())
        return Response(
            {"status": "ready" if ok else "not_ready", "checks": checks},
            status_code=200 if ok else 503,
        )


async def projections_check(
    conn: AsyncConnection[Any], head: int, live: LivePositions
) -> dict[str, Any]:
    """Each read model's lag in events, and how long its oldest unprojected event has
    waited: a read model that is behind is fine, one that does not move is stuck.
    Positions are the higher of the tracking row and this process's runner: a runner
    persists positions it only passed about a second late, far within the limits, and
    in its own process not late at all."""
    cur = await conn.execute("SELECT name, position FROM projection_tracking")
    tracked = {name: position for name, position in await cur.fetchall()}
    lags: dict[str, int] = {}
    waits: dict[str, float] = {}
    for projection in ALL_PROJECTIONS:
        position = max(tracked.get(projection.name, 0), live.get(projection.name))
        lags[projection.name] = head - position
        row = await (await conn.execute(_OLDEST_UNPROJECTED, (position,))).fetchone()
        waits[projection.name] = round(float(row[0]), 3) if row else 0.0
    stuck = sorted(name for name, wait in waits.items() if wait > MAX_STUCK_SECONDS)
    return {
        "ok": not stuck and all(lag <= MAX_READY_LAG for lag in lags.values()),
        "lag": lags,
        "oldest_unprojected_seconds": waits,
        "stuck": stuck,
    }
