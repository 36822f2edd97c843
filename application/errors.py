"""Errors of the application layer (the domain's own are in domain/errors.py)."""

from __future__ import annotations

from uuid import UUID

# Raised by domain/usage.py; re-exported so callers keep importing it from here.
from domain.errors import QuotaExceeded as QuotaExceeded


class ApplicationError(Exception):
    """Base class."""


class NotFound(ApplicationError):
    """No such resource for this principal (also for another tenant's resources)."""

    def __init__(self, kind: str, ident: object) -> None:
        self.kind = kind
        self.ident = str(ident)
        super().__init__(f"{kind} {ident} not found")


class VersionConflict(ApplicationError):
    """The aggregate changed since the caller read it (or a concurrent write won)."""

    def __init__(
        self,
        message: str,
        *,
        precondition: bool = False,
        raced: bool = True,
        current_version: int | None = None,
        position: int | None = None,
        aggregate_id: UUID | None = None,
    ) -> None:
        # precondition=True: the caller's If-Match did not match (HTTP 412), otherwise a
        # concurrent writer won the race (HTTP 409).
        self.precondition = precondition
        self.raced = raced
        """False when the request's version was already stale before anything was saved:
        trying again cannot help (application/quotas.py retry_on_conflict)."""
        self.current_version = current_version
        self.position = position
        """Where known: the aggregate's version now and the global position of its last
        event, so a client re-reads with ?min_position= instead of retrying blind."""
        self.aggregate_id = aggregate_id
        """Where the store can tell: which of the appended aggregates lost the race."""
        super().__init__(message)


class PermissionDenied(ApplicationError):
    pass


class AuthenticationFailed(ApplicationError):
    pass


class ServiceUnavailable(ApplicationError):
    pass


class RateLimited(ApplicationError):
    """Too many requests (or failed logins) for now; retry after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class StepFailed(ApplicationError):
    """One attempt of a step failed; the message is for the pipeline's user. `retryable`
    says whether another attempt may help."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        self.retryable = retryable
        super().__init__(message)
