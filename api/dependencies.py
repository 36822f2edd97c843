"""What handlers may ask for, by name: each is provided once, in the app factory
(api/app.py `dependencies`), from the one composition root (api/bootstrap.py). A handler
declares the services it uses (`pipelines: PipelineServiceDep`) instead of receiving the
whole container, so what a route touches is read off its signature."""

from __future__ import annotations

from litestar.di import NamedDependency
from litestar.exceptions import ValidationException
from nats.aio.client import Client as NatsClient
from psycopg_pool import AsyncConnectionPool

from api.controllers.audit_params import AuditQuery
from api.controllers.paging import Paging
from application.api_keys import ApiKeyService
from application.authoring.service import AuthoringService
from application.connections import ConnectionService
from application.deployments import DeploymentService
from application.errors import ServiceUnavailable
from application.jobs import JobService
from application.logins import LoginService
from application.pipeline_rollbacks import PipelineRollbacks
from application.pipelines import PipelineService
from application.point_in_time import PointInTime
from application.runs import RunService
from application.secrets import SecretService
from application.sessions import SessionService
from application.tenants import TenantService
from application.threads import Threaded
from application.users import UserService
from application.webhooks import WebhookService
from infrastructure.live_events import LiveEvents
from infrastructure.plugins.catalog import PluginCatalog
from infrastructure.run_logs import RunLogs
from infrastructure.settings import Settings
from projections import (
    LivePositions,
    PipelineQueries,
    TenantQueries,
    UserQueries,
    wait_for_position,
)
from projections.api_keys import ApiKeyQueries
from projections.audit_queries import AuditQueries
from projections.connections import ConnectionQueries
from projections.deployment_queries import DeploymentQueries
from projections.job_queries import JobQueries
from projections.run_queries import RunQueries
from projections.secrets import SecretQueries
from projections.step_history import StepHistoryQueries
from projections.webhook_queries import WebhookQueries


class ReadYourWrites:
    """?min_position= of every query: wait (bounded) until the read model includes that
    position, at once when this process's runner has passed it, else as the tracking
    row says (which may lag the runner of another process by about a second for
    positions it had nothing to apply at)."""

    def __init__(self, pool: AsyncConnectionPool, live: LivePositions, timeout: float) -> None:
        self._pool = pool
        self._live = live
        self._timeout = timeout

    async def __call__(self, projection: str, min_position: int | None) -> None:
        if not min_position or self._live.get(projection) >= min_position:
            return
        head = await self._head()
        if min_position > head:
            # No event has that position (yet): waiting could only time out. A position
            # a command answered has been committed, so it is never past the head.
            message = f"no event has position {min_position}; the latest is {head}"
            raise ValidationException(
                message, extra=[{"message": message, "key": "min_position", "source": "query"}]
            )
        if not await wait_for_position(
            self._pool, projection, min_position, self._timeout, live=self._live
        ):
            raise ServiceUnavailable(
                f"the {projection} read model has not reached position {min_position} "
                f"within {self._timeout:g}s; retry shortly"
            )

    async def _head(self) -> int:
        async with self._pool.connection() as conn:
            cur = await conn.execute("SELECT coalesce(max(notification_id), 0) FROM norn_events")
            row = await cur.fetchone()
        return int(row[0]) if row else 0


# Commands: synchronous services behind the one thread seam (application/threads.py).
PipelineServiceDep = NamedDependency[Threaded[PipelineService]]
TenantServiceDep = NamedDependency[Threaded[TenantService]]
UserServiceDep = NamedDependency[Threaded[UserService]]
ApiKeyServiceDep = NamedDependency[Threaded[ApiKeyService]]
RunServiceDep = NamedDependency[Threaded[RunService]]
DeploymentServiceDep = NamedDependency[Threaded[DeploymentService]]
RollbackServiceDep = NamedDependency[Threaded[PipelineRollbacks]]
JobServiceDep = NamedDependency[Threaded[JobService]]
SessionServiceDep = NamedDependency[Threaded[SessionService]]
LoginServiceDep = NamedDependency[LoginService]
WebhookServiceDep = NamedDependency[Threaded[WebhookService]]
SecretServiceDep = NamedDependency[Threaded[SecretService]]
AuthoringServiceDep = NamedDependency[Threaded[AuthoringService]]
ConnectionServiceDep = NamedDependency[Threaded[ConnectionService]]

# Queries: read models (asynchronous already).
ReadYourWritesDep = NamedDependency[ReadYourWrites]
PagingDep = NamedDependency[Paging]
PipelineQueriesDep = NamedDependency[PipelineQueries]
TenantQueriesDep = NamedDependency[TenantQueries]
UserQueriesDep = NamedDependency[UserQueries]
ApiKeyQueriesDep = NamedDependency[ApiKeyQueries]
RunQueriesDep = NamedDependency[RunQueries]
DeploymentQueriesDep = NamedDependency[DeploymentQueries]
JobQueriesDep = NamedDependency[JobQueries]
RunLogsDep = NamedDependency[RunLogs]
WebhookQueriesDep = NamedDependency[WebhookQueries]
SecretQueriesDep = NamedDependency[SecretQueries]
StepHistoryDep = NamedDependency[StepHistoryQueries]
ConnectionQueriesDep = NamedDependency[ConnectionQueries]

# The audit trail (README "Audit trail"): its read model, its shared filters, and
# point-in-time reads rebuilt from the event store.
AuditQueriesDep = NamedDependency[AuditQueries]
AuditQueryDep = NamedDependency[AuditQuery]
PointInTimeDep = NamedDependency[Threaded[PointInTime]]

# The rest of the process.
SettingsDep = NamedDependency[Settings]
PluginCatalogDep = NamedDependency[PluginCatalog]
NatsDep = NamedDependency[NatsClient | None]
"""None until the API has connected to NATS (it retries in the background)."""
ReadPoolDep = NamedDependency[AsyncConnectionPool]
LiveEventsDep = NamedDependency[LiveEvents]
"""The process's one NATS subscription shared by its live feeds."""
LivePositionsDep = NamedDependency[LivePositions]
