"""Handler dependencies resolved in turn (api/dependency_resolution.py)."""

from __future__ import annotations

import inspect
from collections.abc import Iterator

from litestar import Litestar, get
from litestar._kwargs.kwargs_model import KwargsModel
from litestar.di import NamedDependency, Provide
from litestar.testing import TestClient

from api import dependency_resolution


def test_litestars_own_resolution_is_still_the_one_that_was_replaced() -> None:
    # An upgrade that changes the method (say, a fix of litestar issue #4563) fails here,
    # so that the replacement is reconsidered rather than kept blindly.
    original = inspect.getsource(dependency_resolution.LITESTAR_RESOLVE)
    assert "for batch in self.dependency_batches" in original
    assert "create_task_group" in original
    assert list(inspect.signature(dependency_resolution.LITESTAR_RESOLVE).parameters) == [
        "self",
        "connection",
        "kwargs",
    ]


def test_dependencies_and_the_ones_they_need_are_resolved_in_turn() -> None:
    dependency_resolution.install()
    assert KwargsModel.resolve_dependencies is dependency_resolution.resolve_in_turn
    order: list[str] = []

    def first() -> int:
        order.append("first")
        return 1

    async def second() -> int:
        order.append("second")
        return 2

    def third(first: NamedDependency[int], second: NamedDependency[int]) -> int:  # a later batch
        order.append("third")
        return first + second

    def cleaned_up() -> Iterator[str]:
        yield "resource"
        order.append("cleaned up")

    @get(
        "/",
        dependencies={
            "first": Provide(first, sync_to_thread=False),
            "second": Provide(second),
            "third": Provide(third, sync_to_thread=False),
            "resource": Provide(cleaned_up),
        },
    )
    async def handler(
        first: NamedDependency[int],
        second: NamedDependency[int],
        third: NamedDependency[int],
        resource: NamedDependency[str],
    ) -> dict[str, object]:
        return {"sum": first + second + third, "resource": resource}

    with TestClient(Litestar([handler])) as client:
        answer = client.get("/")
    assert answer.json() == {"sum": 6, "resource": "resource"}
    assert order.index("third") > max(order.index("first"), order.index("second"))
    assert order[-1] == "cleaned up"  # a generator dependency is still closed after
