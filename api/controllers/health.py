from __future__ import annotations

import asyncio
from typing import Any

from litestar import Controller, Response, get

from api.controllers.common import ContainerDep
from infrastructure.notification_log import max_position
from projections import ALL_PROJECTIONS

MAX_READY_LAG = 1000


class HealthController(Controller):
    path = "/health"
    opt = {"public": True}

    @get("/", summary="Liveness")
    async def live(self) -> dict[str, str]:
        return {"status": "ok"}

    @get("/ready", summary="Readiness: Postgres, NATS and projection lag")
    async def ready(self, container: ContainerDep) -> Response[dict[str, Any]]:
        checks: dict[str, Any] = {}
        try:
            async with asyncio.timeout(2), container.read_pool.connection() as conn:
                head = await max_position(conn)
                cur = await conn.execute("SELECT name, position FROM projection_tracking")
                tracked = {name: pos for name, pos in await cur.fetchall()}
            checks["postgres"] = {"ok": True, "position": head}
            lags = {p.name: head - tracked.get(p.name, 0) for p in ALL_PROJECTIONS}
            checks["projections"] = {
                "ok": all(lag <= MAX_READY_LAG for lag in lags.values()),
                "lag": lags,
            }
        except Exception as error:
            checks["postgres"] = {"ok": False, "error": type(error).__name__}
        nc = container.nats
        checks["nats"] = {"ok": bool(nc is not None and nc.is_connected)}
        ok = all(c.get("ok") for c in checks.values())
        return Response(
            {"status": "ready" if ok else "not_ready", "checks": checks},
            status_code=200 if ok else 503,
        )
