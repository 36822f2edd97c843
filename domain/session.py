"""The Session aggregate: one login of a user, the family of refresh tokens it issues,
and its end (logout, or a spent refresh token presented again).

Refresh tokens rotate: each refresh records the next generation, and only a token of the
current generation may refresh. A token of an older generation is a copy someone kept
(a thief, or a client that lost a response); presenting it ends the whole session, so
neither copy works any more (OAuth 2.0 Security BCP, refresh token rotation).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate

from domain.errors import InvalidCommand
from domain.events import CommandContext, NornCreated, NornEvent

END_REASONS = ("logout", "refresh_token_reuse")


class SessionEvent(NornEvent):
    aggregate_type = "session"


class SessionStarted(SessionEvent, NornCreated):
    user_id: str
    credentials_version: int
    expires_at: datetime


class SessionRefreshed(SessionEvent):
    generation: int

    def apply(self, aggregate: Session) -> None:
        aggregate.generation = self.generation


class SessionEnded(SessionEvent):
    reason: str

    def apply(self, aggregate: Session) -> None:
        aggregate.ended = True
        aggregate.end_reason = self.reason


class Session(Aggregate):
    def __init__(
        self, tenant_id: str | None, user_id: str, credentials_version: int, expires_at: datetime
    ) -> None:
        self.tenant_id = tenant_id
        self.user_id = user_id
        self.credentials_version = credentials_version
        self.expires_at = expires_at
        self.generation = 1
        self.ended = False
        self.end_reason = ""

    @classmethod
    def start(
        cls,
        *,
        session_id: UUID,
        user_id: str,
        tenant_id: str | None,
        credentials_version: int,
        expires_at: datetime,
        ctx: CommandContext,
    ) -> Session:
        if expires_at.tzinfo is None:
            raise InvalidCommand("expires_at needs a time zone", "expires_at")
        return cls._create(
            SessionStarted,
            id=session_id,
            tenant_id=tenant_id,
            user_id=user_id,
            credentials_version=credentials_version,
            expires_at=expires_at,
            **ctx.event_fields(),
        )

    def usable_at(self, now: datetime) -> bool:
        return not self.ended and now < self.expires_at

    def rotate(self, presented_generation: int, now: datetime, ctx: CommandContext) -> int | None:
        """Move to the next refresh generation and return it; or, when the presented
        token is of a spent generation, end the session and return None (the caller
        saves that and refuses the request)."""
        if not self.usable_at(now):
            raise InvalidCommand("the session has ended or expired")
        if presented_generation != self.generation:
            self._trigger(SessionEnded, ctx, reason="refresh_token_reuse")
            return None
        self._trigger(SessionRefreshed, ctx, generation=self.generation + 1)
        return self.generation

    def end(self, reason: str, ctx: CommandContext) -> bool:
        """End the session; False if it had already ended."""
        if reason not in END_REASONS:
            raise InvalidCommand(f"reason must be one of {', '.join(END_REASONS)}", "reason")
        if self.ended:
            return False
        self._trigger(SessionEnded, ctx, reason=reason)
        return True

    def _trigger(self, event_class: type[SessionEvent], ctx: CommandContext, **fields: Any) -> None:
        self.trigger_event(event_class, tenant_id=self.tenant_id, **ctx.event_fields(), **fields)
