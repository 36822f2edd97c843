"""GET /health/detailed: each component's state as this process sees it, with lags and
the Norn version (platform admins only; /health/ready is what load balancers ask)."""

from __future__ import annotations

import asyncio
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from litestar import Controller, Request, get

from api.controllers.health import projections_check
from api.dependencies import LivePositionsDep, NatsDep, ReadPoolDep
from application.authorization import Permission
from infrastructure.nats import POSITION_HEADER
from infrastructure.notification_log import max_position

try:
    NORN_VERSION = version("norn")
except PackageNotFoundError:  # run from a checkout without installing
    NORN_VERSION = "unknown"


class HealthDetailsController(Controller):
    path = "/health/detailed"
    opt = {"permission": Permission.PLATFORM_HEALTH}

    @get("/", summary="Each component's state, lag and version (platform admins)")
    async def detailed(
        self, request: Request, read_pool: ReadPoolDep, positions: LivePositionsDep, nats: NatsDep
    ) -> dict[str, Any]:
        container = request.app.state.container
        components: dict[str, Any] = {}
        database: dict[str, Any] = {"state": "up"}
        try:
            async with asyncio.timeout(2), read_pool.connection() as conn:
                head = await max_position(conn)
                projections = await projections_check(conn, head, positions)
                readers = await _store_readers(conn, head)
                database["version"] = conn.info.parameter_status("server_version")
            database["head_position"] = head
        except Exception as error:
            database = {"state": "down", "error": type(error).__name__}
            projections = None
            readers = {}
        database["pools"] = {
            name: {
                key: stats.get(key, 0)
                for key in ("pool_size", "pool_available", "requests_waiting", "pool_max")
            }
            for name, pool in container.metrics.pools.items()
            if (stats := pool.get_stats()) is not None
        }
        components["database"] = database
        components["nats"] = {"state": "up" if nats is not None and nats.is_connected else "down"}
        if nats is not None and nats.is_connected:
            v = nats.connected_server_version
            components["nats"]["version"] = f"{v.major}.{v.minor}.{v.patch}"
        components["relay"] = (
            _relay(container.relay)
            if container.relay is not None
            else await _relay_elsewhere(nats, container.settings.nats_stream, database)
        )
        components["projections"] = _projections(projections)
        components["executor"] = _executor(container.executor)
        components.update(readers)
        down = [
            name
            for name, component in components.items()
            if name != "projections" and component.get("state") == "down"
        ]
        stuck = [n for n, p in components["projections"].items() if p.get("state") != "ok"]
        return {
            "status": "ok" if not down and not stuck else "degraded",
            "version": NORN_VERSION,
            "components": components,
        }


_READERS = (
    "SELECT 'triggers', position FROM event_trigger_tracking WHERE name = 'triggers'"
    " UNION ALL SELECT 'notifier', position FROM notifier_tracking WHERE name = 'webhooks'"
)


async def _store_readers(conn: Any, head: int) -> dict[str, Any]:
    """How far the roles that read the store under a tracking row of their own have got
    (the scheduler's trigger loop, the notifier's fan-out), whichever process runs them:
    a lag that only grows means none does."""
    rows = await (await conn.execute(_READERS)).fetchall()
    return {
        name: {"position": position, "lag_events": max(0, head - position)}
        for name, position in rows
    }


def _relay(relay: Any) -> dict[str, Any]:
    return {
        "state": "leading" if relay.is_leader else "standby",
        "published_position": relay.published_position,
        "lag_events": relay.lag_events,
        "lag_seconds": round(relay.lag_seconds, 3),
    }


async def _relay_elsewhere(nats: Any, stream: str, database: dict[str, Any]) -> dict[str, Any]:
    """Another process relays: how far it got is the position of the stream's last
    message (as the relay itself resumes)."""
    if nats is None or not nats.is_connected:
        return {"state": "unknown"}
    try:
        async with asyncio.timeout(1):
            js = nats.jetstream()
            info = await js.stream_info(stream)
            published = 0
            if info.state.messages:
                last = await js.get_msg(stream, seq=info.state.last_seq)
                published = int((last.headers or {}).get(POSITION_HEADER, 0))
    except Exception as error:
        return {"state": "unknown", "error": type(error).__name__}
    relay: dict[str, Any] = {"state": "elsewhere", "published_position": published}
    if "head_position" in database:
        relay["lag_events"] = max(0, database["head_position"] - published)
    return relay


def _projections(check: dict[str, Any] | None) -> dict[str, Any]:
    if check is None:
        return {}
    stuck = set(check["stuck"])
    return {
        name: {
            "state": "stuck" if name in stuck else "ok",
            "lag_events": lag,
            "oldest_unprojected_seconds": check["oldest_unprojected_seconds"][name],
        }
        for name, lag in check["lag"].items()
    }


def _executor(executor: Any) -> dict[str, Any]:
    if executor is None:
        return {"state": "not_in_this_process"}
    return {
        "state": "running" if executor.nats is not None else "connecting",
        "slots_in_use": executor.slots_in_use,
        "slots": executor.slots_total,
    }
