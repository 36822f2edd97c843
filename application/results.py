"""What every command answers (docs/architecture.md, "The shape of a command")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Changed(Generic[T]):
    """The state a command left its aggregate in, that aggregate's version, and the
    position of the last event of the command's append; `position` is None when the
    command changed nothing (a PUT of the same body, a second revoke), so there is
    nothing for `?min_position=` to wait for. A use case that answers more subclasses
    it with keyword-only fields. `replayed`: the answer of an earlier attempt of the same
    idempotent request, which did the work (application/idempotency.py)."""

    state: T
    version: int
    position: int | None
    replayed: bool = False

    @property
    def changed(self) -> bool:
        return self.position is not None
