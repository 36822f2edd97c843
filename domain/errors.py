"""Every error the domain raises. The API maps each class to one HTTP status."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar


class DomainError(Exception):
    """Base class: a command that the domain refuses."""


@dataclass(frozen=True)
class FieldError:
    """One problem with one input: where it is (a dotted path) and what is wrong."""

    field: str
    message: str


class InvalidDefinition(DomainError):
    """A pipeline definition breaks one or more rules; every problem is listed."""

    summary: ClassVar[str] = "the pipeline definition is invalid"
    """The answer's message (the details list the problems)."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in errors))


class InvalidCommand(DomainError):
    """A command whose arguments make no sense in the aggregate's current state."""

    def __init__(self, message: str, field: str | None = None) -> None:
        self.field = field
        super().__init__(message)


class Conflict(InvalidCommand):
    """The command is well-formed but conflicts with the current state: the aggregate's
    (cancelling a run that has finished) or a unique value another already holds (a
    namespace that exists). HTTP 409 RESOURCE_CONFLICT; an InvalidCommand otherwise, so
    code that refuses any invalid command keeps doing so."""


class AggregateDeleted(DomainError):
    """The aggregate was (soft-)deleted; it accepts no more commands."""


@dataclass
class NameTaken(DomainError):
    """A unique name is already held by another aggregate."""

    kind: str
    name: str
    holder_id: str | None = field(default=None)

    @property
    def field(self) -> str:
        """The input that holds the name: a deployment's "name" is its environment (one
        deployment per pipeline and environment)."""
        return "environment" if self.kind == "deployment" else "name"

    def __str__(self) -> str:
        if self.kind == "deployment":
            return f"the pipeline already has a deployment in environment {self.name!r}"
        return f"{self.kind} name {self.name!r} is already taken"


class WrongPassword(InvalidCommand):
    """A password given to prove who one is (e.g. the current one, to change it) is
    wrong. A validation error on its field, and a failed guess for the login throttle."""


class QuotaExceeded(DomainError):
    """The command would take the tenant past one of its quotas."""

    def __init__(self, quota: str, limit: int, used: int) -> None:
        self.quota = quota
        self.limit = limit
        self.used = used
        super().__init__(f"quota {quota} exceeded: {used} of {limit} in use")


class ShardShort(Exception):
    """A usage shard holds too few free units to decide a take alone (domain/usage.py).
    Not a client's error: the quota ledger refills the shard and decides again."""

    def __init__(self, free: int, amount: int) -> None:
        self.free = free
        self.amount = amount
        super().__init__(f"{free} free units, {amount} asked")


class VerificationInProgress(Conflict):
    """A deployment's release is still verifying: no other release or rollback until its
    outcome is known (HTTP 409, naming the release)."""

    def __init__(self, release: int) -> None:
        self.release = release
        super().__init__(f"release {release} is verifying; wait for its outcome", "release")


class NoActiveRelease(Conflict):
    """The deployment has no active release to execute or roll back from (its first
    release is verifying or failed)."""


class Retired(Conflict):
    """The aggregate was retired: its history stays readable, it accepts no command."""


class HasDeployments(Conflict):
    """A pipeline cannot be deleted while deployments of it are not retired."""
