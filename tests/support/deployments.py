"""A world of real services on the in-memory store with deployments: the services, the
verification that ends releases, a clock to move past deadlines, helpers to set policies."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

from application.deployment_verification import DeploymentVerification, utc_now
from application.deployments import DeploymentService
from application.pipeline_rollbacks import PipelineRollbacks
from application.tenants import TenantService
from domain.deployment import Deployment
from domain.events import CommandContext
from domain.pipeline import PipelineDefinition
from domain.release import Strategy
from domain.run import Run
from domain.tenant import EnvironmentPolicy
from tests.support.runs import RunWorld, step

CTX = CommandContext("user:u1", "corr-1")
SYSTEM_CTX = CommandContext("system:deployments", "corr-2")
GREEN = Strategy(type="blue-green", verification_timeout=60, verification_params={"mode": "check"})


class Candidates:
    """The sweep's candidates as a read model would list them: here, every deployment
    given (the sweep decides on the write side whether each is due)."""

    def __init__(self, *ids: UUID) -> None:
        self.ids = list(ids)

    def due(self, now: datetime, limit: int) -> list[UUID]:
        return self.ids[:limit]


class World(RunWorld):
    def __init__(self, tmp_path: Path, max_attempts: int = 3, **quotas: int) -> None:
        super().__init__(tmp_path, max_attempts=max_attempts, **quotas)
        self.deployments = DeploymentService(self.store, self.pipelines, self.runs)
        self.rollbacks = PipelineRollbacks(self.store, self.pipelines, self.deployments)
        self.later_by = timedelta()
        self.verification = DeploymentVerification(self.store, clock=self.now)
        self.run_ended = self.verification.run_ended  # as api/bootstrap.py wires executors
        self.tenants = TenantService(self.store, self.usage)
        self.admin = replace(self.editor, subject_id="u2", roles=frozenset({"admin"}))
        self.pipeline_id = self.pipeline("orders", step("e", "Test.emit"))

    def now(self) -> datetime:
        return utc_now() + self.later_by

    def create(self, environment: str = "production", **fields: Any) -> Deployment:
        principal = fields.pop("principal", self.editor)
        pipeline_id = fields.pop("pipeline_id", self.pipeline_id)
        made = self.deployments.create(principal, pipeline_id, environment, CTX, **fields)
        return made.state

    def revise(self, *steps: Any) -> None:
        definition = PipelineDefinition(name="orders", steps=steps)
        self.pipelines.revise(self.editor, self.pipeline_id, definition, CTX)

    def verification_run(self, deployment: Deployment) -> Run:
        verifying = self.store.load(Deployment, deployment.id, "deployment").verifying()
        assert verifying is not None and verifying.run_id is not None
        return self.run(UUID(verifying.run_id))

    def verification_run_of(self, deployment: Deployment, release: int) -> Run:
        run_id = self.deployment(deployment.id).releases[release].run_id
        assert run_id is not None
        return self.run(UUID(run_id))

    def deployment(self, deployment_id: UUID) -> Deployment:
        return self.store.load(Deployment, deployment_id, "deployment")

    def policy(self, environment: str, **policy: bool) -> None:
        tenant_id = UUID(self.tenant_id)
        self.tenants.set_environment_policy(
            self.admin, tenant_id, environment, EnvironmentPolicy(**policy), CTX
        )
