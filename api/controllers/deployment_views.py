"""How deployments and their releases read over HTTP: from the read model's rows
(projections/deployment_queries.py) and from what a command answers
(application/deployments.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from api.controllers.pipeline_views import triggers_out
from api.schemas.deployments import (
    DeploymentRead,
    DeploymentStatusOut,
    DeploymentWritten,
    ReleaseOut,
    StrategyIn,
    StrategyOut,
    VerifyingOut,
)
from application.deployments import Released
from application.point_in_time import Past
from domain.deployment import Deployment
from domain.release import Release, Strategy

RECENT_RELEASES = 10


def to_strategy(body: StrategyIn | None) -> Strategy | None:
    if body is None:
        return None
    return Strategy(
        type=body.type,
        verification_timeout=body.verification_timeout,
        verification_params=body.verification_params,
    )


def _strategy(value: Strategy | dict[str, Any]) -> StrategyOut:
    if isinstance(value, Strategy):
        value = msgspec.to_builtins(value)
    return StrategyOut(
        type=value.get("type", "direct"),
        verification_timeout=value.get("verification_timeout"),
        verification_params=value.get("verification_params") or {},
    )


def release_from_row(row: dict[str, Any]) -> ReleaseOut:
    return ReleaseOut(
        release=row["release"],
        revision=row["revision"],
        strategy=_strategy(row["strategy"]),
        outcome=row["outcome"],
        run_id=row["run_id"],
        deadline=row["deadline"],
        failure=row["failure"],
        rolled_back_to=row["rolled_back_to"],
        created_by=row["created_by"],
        created_at=row["created_at"],
    )


def release_out(release: Release) -> ReleaseOut:
    return ReleaseOut(
        release=release.release,
        revision=release.revision,
        strategy=_strategy(release.strategy),
        outcome=str(release.outcome),
        run_id=release.run_id,
        deadline=release.deadline,
        failure=release.failure,
        rolled_back_to=release.rolled_back_to,
        created_by=release.created_by,
        created_at=release.created_at,
    )


def from_row(row: dict[str, Any]) -> DeploymentRead:
    return DeploymentRead(
        id=row["id"],
        tenant_id=row["tenant_id"],
        pipeline_id=row["pipeline_id"],
        environment=row["environment"],
        status=row["status"],
        active_release=row["active_release"],
        active_revision=row["active_revision"],
        verifying_release=row["verifying_release"],
        release_count=row["release_count"],
        strategy=_strategy(row["strategy"]),
        variables=row["variables"] or {},
        labels=row["labels"] or {},
        description=row["description"],
        triggers=triggers_out(row.get("triggers") or []),
        retired=row["retired"],
        created_by=row["created_by"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        version=row["version"],
    )


def read_of(past: Past[Deployment]) -> DeploymentRead:
    """A deployment as it was (?as_of=): every field of GET comes from the aggregate."""
    deployment = past.state
    active = deployment.active_release
    return DeploymentRead(
        id=str(deployment.id),
        tenant_id=deployment.tenant_id,
        pipeline_id=deployment.pipeline_id,
        environment=deployment.environment,
        status=str(deployment.status),
        active_release=active,
        active_revision=None if active is None else deployment.releases[active].revision,
        verifying_release=deployment.verifying_release,
        release_count=len(deployment.releases),
        strategy=_strategy(deployment.strategy),
        variables=deployment.variables,
        labels=deployment.labels,
        description=deployment.description,
        retired=deployment.retired,
        created_by=deployment.created_by,
        created_at=deployment.created_on,
        updated_at=deployment.modified_on,
        version=past.version,
    )


def written(result: Released) -> DeploymentWritten:
    deployment = result.state
    return DeploymentWritten(
        id=str(deployment.id),
        pipeline_id=deployment.pipeline_id,
        environment=deployment.environment,
        status=str(deployment.status),
        active_release=deployment.active_release,
        verifying_release=deployment.verifying_release,
        release=release_out(result.release),
        version=result.version,
        position=result.position,
    )


def status_out(row: dict[str, Any], releases: list[dict[str, Any]]) -> DeploymentStatusOut:
    verifying = None
    if row["verifying_release"] is not None:
        since = row["verifying_since"]
        elapsed = (datetime.now(UTC) - since).total_seconds() if since else None
        verifying = VerifyingOut(
            release=row["verifying_release"],
            revision=row["verifying_revision"],
            run_id=row["verifying_run_id"],
            deadline=row["verifying_deadline"],
            elapsed_s=None if elapsed is None else round(max(elapsed, 0.0), 3),
        )
    return DeploymentStatusOut(
        status=row["status"],
        active_release=row["active_release"],
        active_revision=row["active_revision"],
        verifying=verifying,
        recent_releases=[release_from_row(r) for r in releases[:RECENT_RELEASES]],
    )
