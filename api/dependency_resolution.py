"""Handler dependencies resolved one after another, not in a task group per request.

Litestar resolves the dependencies of one level of the graph concurrently, in an anyio
task group, whenever a handler declares two or more (litestar issue #4563: the task group
costs far more than resolving them). Every dependency Norn provides (api/app.py
`dependencies`) is a constant from the composition root or a parse of the request's
query string: none waits on I/O, so nothing is gained by running them concurrently, and
a GET by id spent a tenth of the API process's samples creating, running and joining
those tasks. `install` replaces `KwargsModel.resolve_dependencies` with the same loop
done in turn, which is also what FastAPI does.

Keep it that way: a provider that waits on I/O belongs in the handler, not in
`dependencies`. tests/unit/test_dependency_resolution.py fails when Litestar's method
changes shape, so that an upgrade is looked at rather than silently patched."""

from __future__ import annotations

from typing import Any

from litestar._kwargs.cleanup import DependencyCleanupGroup
from litestar._kwargs.dependencies import resolve_dependency
from litestar._kwargs.kwargs_model import KwargsModel
from litestar.connection import ASGIConnection

LITESTAR_RESOLVE = KwargsModel.resolve_dependencies
"""Litestar's own, kept for the test that watches it."""


async def resolve_in_turn(
    self: KwargsModel, connection: ASGIConnection, kwargs: dict[str, Any]
) -> DependencyCleanupGroup:
    cleanup_group = DependencyCleanupGroup()
    for batch in self.dependency_batches:  # a batch's dependencies need only earlier ones
        for dependency in batch:
            await resolve_dependency(dependency, connection, kwargs, cleanup_group)
    return cleanup_group


def install() -> None:
    KwargsModel.resolve_dependencies = resolve_in_turn  # type: ignore[method-assign]
