"""The read side: one module per read model (event -> SQL mapping and its queries), plus
the machinery every projection shares (tracking, runner, rebuild, pagination)."""

from __future__ import annotations

from projections.api_keys import ApiKeysProjection
from projections.audit_log import AuditLogProjection
from projections.connections import ConnectionsProjection
from projections.deployment_queries import DeploymentQueries, VerifyingDeployments
from projections.deployments import DeploymentsProjection
from projections.job_queries import JobQueries
from projections.jobs import JobsProjection
from projections.pipelines import PipelineQueries, PipelinesProjection
from projections.positions import LivePositions
from projections.projection import Projection, apply_batch, handles
from projections.rebuild import RebuildError, rebuild
from projections.runner import ProjectionRunner
from projections.runs import RunsProjection
from projections.secrets import SecretsProjection
from projections.sessions import RunnerSessions
from projections.tenants import TenantQueries, TenantsProjection
from projections.tracking import projection_status, wait_for_position
from projections.users import UserQueries, UsersProjection
from projections.webhooks import WebhooksProjection

ALL_PROJECTIONS: tuple[Projection, ...] = (
    PipelinesProjection(),
    TenantsProjection(),
    ApiKeysProjection(),
    UsersProjection(),
    RunsProjection(),
    DeploymentsProjection(),
    JobsProjection(),
    WebhooksProjection(),
    SecretsProjection(),
    ConnectionsProjection(),
    AuditLogProjection(),
)
"""Every read model, for the projector role and `norn projections status|rebuild`."""

PROJECTOR_GROUP = "read_models"
"""The name (lock and JetStream consumer) of the projector role's one runner, which
keeps every read model (projections/runner.py)."""


def projection_named(name: str) -> Projection:
    """The projection called `name` (for the CLI); KeyError lists the valid names."""
    for projection in ALL_PROJECTIONS:
        if projection.name == name:
            return projection
    raise KeyError(f"no projection {name!r}; known: {', '.join(p.name for p in ALL_PROJECTIONS)}")


__all__ = [
    "ALL_PROJECTIONS",
    "PROJECTOR_GROUP",
    "ApiKeysProjection",
    "AuditLogProjection",
    "ConnectionsProjection",
    "DeploymentQueries",
    "DeploymentsProjection",
    "JobQueries",
    "JobsProjection",
    "LivePositions",
    "PipelineQueries",
    "PipelinesProjection",
    "Projection",
    "ProjectionRunner",
    "RebuildError",
    "RunnerSessions",
    "RunsProjection",
    "SecretsProjection",
    "TenantQueries",
    "TenantsProjection",
    "UserQueries",
    "UsersProjection",
    "VerifyingDeployments",
    "WebhooksProjection",
    "apply_batch",
    "handles",
    "projection_named",
    "projection_status",
    "rebuild",
    "wait_for_position",
]
