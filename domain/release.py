"""What a deployment's releases are made of, and the rules for the values a deployment
is given (domain/deployment.py): environment names, strategies, variables and labels."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

import msgspec

from domain.errors import InvalidCommand
from domain.tenant import (  # noqa: F401  (check_environment: the deployment's rule too)
    DESCRIPTION_MAX,
    LABEL_KEY,
    LABEL_VALUE_MAX,
    MAX_LABELS,
    EnvironmentPolicy,
    check_environment,
)
from domain.text import nul_errors

MAX_VARIABLES_BYTES = 65_536
MAX_VERIFICATION_TIMEOUT = 86_400


class Strategy(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """How a release becomes active. `verification_timeout` (seconds, 1-86,400) and
    `verification_params` (over the deployment's variables) are blue-green's only."""

    type: Literal["direct", "blue-green"] = "direct"
    verification_timeout: int | None = None
    verification_params: dict[str, Any] = {}

    @property
    def verifies(self) -> bool:
        return self.type == "blue-green"


DIRECT = Strategy()


class DeploymentStatus(StrEnum):
    PENDING = "pending"
    VERIFYING = "verifying"
    ACTIVE = "active"
    FAILED = "failed"
    RETIRED = "retired"


class ReleaseOutcome(StrEnum):
    VERIFYING = "verifying"
    ACTIVE = "active"
    FAILED = "failed"
    SUPERSEDED = "superseded"
    ROLLED_BACK = "rolled_back"


class Release(msgspec.Struct, kw_only=True):
    release: int
    revision: int
    strategy: Strategy
    outcome: ReleaseOutcome
    created_by: str
    created_at: datetime
    run_id: str | None = None
    """The verification run (blue-green)."""
    deadline: datetime | None = None
    failure: str | None = None
    replaced: int | None = None
    """The release that was active when this one became active."""
    rolled_back_to: int | None = None
    """Set on a release a rollback made: the release whose revision it restored."""


def check_strategy(strategy: Strategy, field: str = "strategy") -> None:
    if strategy.verifies:
        timeout = strategy.verification_timeout
        if timeout is None or not 1 <= timeout <= MAX_VERIFICATION_TIMEOUT:
            raise InvalidCommand(
                f"verification_timeout must be 1 to {MAX_VERIFICATION_TIMEOUT} seconds",
                f"{field}.verification_timeout",
            )
        check_json(strategy.verification_params, f"{field}.verification_params")
    elif strategy.verification_timeout is not None or strategy.verification_params:
        raise InvalidCommand("a direct release does not verify", f"{field}.type")


def check_json(value: dict[str, Any], field: str) -> None:
    for problem in nul_errors(value, field):
        raise InvalidCommand(problem.message, problem.field)
    if len(msgspec.json.encode(value)) > MAX_VARIABLES_BYTES:
        raise InvalidCommand(f"at most {MAX_VARIABLES_BYTES} bytes of JSON", field)


def check_descriptive(labels: dict[str, str], description: str) -> None:
    for problem in nul_errors({"labels": labels, "description": description}, ""):
        raise InvalidCommand(problem.message, problem.field)
    if len(description) > DESCRIPTION_MAX:
        raise InvalidCommand(f"at most {DESCRIPTION_MAX} characters", "description")
    if len(labels) > MAX_LABELS:
        raise InvalidCommand(f"at most {MAX_LABELS} labels", "labels")
    for key, value in labels.items():
        if not LABEL_KEY.fullmatch(key) or len(value) > LABEL_VALUE_MAX:
            raise InvalidCommand(
                f"label {key!r}: a key of 1-63 letters, digits, '.', '_', '/', '-' and a "
                f"value of at most {LABEL_VALUE_MAX} characters",
                f"labels.{key}",
            )


def check_policy(environment: str, strategy: Strategy, policy: EnvironmentPolicy) -> None:
    """What the environment's policy requires of a release's strategy."""
    if policy.require_verification and not strategy.verifies:
        raise InvalidCommand(
            f"environment {environment!r} requires verification: release it blue-green",
            "strategy.type",
        )
