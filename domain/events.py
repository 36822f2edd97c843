"""The base of every Norn domain event and the metadata each one carries.

Every event records who caused it (`actor`), which tenant it belongs to, and the
correlation/causation ids that tie a chain of commands together. These travel in the
stored state, so the relay can build the CloudEvents envelope from the store alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

from eventsourcing.domain import Aggregate


@dataclass(frozen=True)
class Idempotency:
    """The Idempotency-Key a command was asked with, as the command needs it (README
    "Idempotency-Key"): `key_id`, a digest of the principal, the key, the request and the
    key's generation, from which the command derives the ids of what it creates, so that
    a second attempt of the same request cannot create a second aggregate; and
    `earlier_attempt`, whether an attempt before this one may already have acted (its
    process died, or it answered a server error), so the command looks for what that
    attempt created before creating anything."""

    key_id: str
    earlier_attempt: bool = False
    answered_earlier: list[str] = field(default_factory=list, compare=False)
    """The ids of what the command found an earlier attempt had done and answered (it
    notes them: application/idempotency.py), so the API marks the answer replayed."""

    @property
    def causation_id(self) -> str:
        """The cause recorded in the command's events: the request, the same for every
        attempt of it, so that an attempt can find what an earlier one did."""
        return f"idempotent:{self.key_id[:32]}"


@dataclass(frozen=True)
class CommandContext:
    """Who is asking, and which request chain this command belongs to."""

    actor: str
    correlation_id: str
    causation_id: str | None = None
    idempotency: Idempotency | None = None
    """Never stored in events: only the ids derived from it are."""

    def event_fields(self) -> dict[str, Any]:
        return {
            "actor": self.actor,
            "correlation_id": self.correlation_id,
            "causation_id": self.causation_id,
        }


class NornEvent(Aggregate.Event):
    """Base of all Norn events. Subclasses add payload fields (with defaults for any
    field added after events of the class were first stored)."""

    # Fields every event carries (docs/architecture.md §2).
    tenant_id: str | None
    actor: str
    correlation_id: str
    causation_id: str | None

    # Name of the aggregate in subjects and CloudEvents types, e.g. "pipeline".
    aggregate_type: ClassVar[str] = ""
    # Payload fields never published (NATS, feeds, webhooks), e.g. a password hash.
    private_fields: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def event_name(cls) -> str:
        """Snake-case fact name without the aggregate prefix: PipelineRolledBack ->
        rolled_back."""
        name = cls.__name__
        prefix = cls.aggregate_type.replace("_", "")
        if name.lower().startswith(prefix):
            name = name[len(prefix) :]
        return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()

    @classmethod
    def type_name(cls) -> str:
        """The CloudEvents type, e.g. norn.pipeline.rolled_back.v1."""
        version = getattr(cls, "class_version", 1)
        return f"norn.{cls.aggregate_type}.{cls.event_name()}.v{version}"


class NornCreated(NornEvent, Aggregate.Created):
    """Base of the first event of every Norn aggregate."""


METADATA_FIELDS = frozenset(
    {
        "originator_id",
        "originator_version",
        "originator_topic",
        "timestamp",
        "tenant_id",
        "actor",
        "correlation_id",
        "causation_id",
        "class_version",
    }
)
"""State keys that belong to the envelope, not to the event's `data` payload."""
