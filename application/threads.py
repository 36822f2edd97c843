"""The seam between the event loop and the synchronous application (docs/architecture.md,
"The shape of a command"). Application services are synchronous: the event store runs
on a psycopg connection pool that blocks. Async code crosses into them here, and only
here: API handlers `await pipelines.create(...)` on a `Threaded` service; the other
blocking calls (authentication's loads of what is not cached, the executor's claim, run
execution's and recovery's reads and appends) go through `in_thread`. File I/O of plugin
steps has its own seam (infrastructure/step_runner.py)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any, Generic, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S")


async def in_thread(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Run `fn` in a worker thread of the loop's default executor (sized in the app's
    lifespan), with the caller's context variables."""
    return await asyncio.to_thread(fn, *args, **kwargs)


class Threaded(Generic[S]):
    """An async view of a synchronous service: every public method of the service is a
    coroutine function here, running the method in a worker thread. What the method
    raises is raised to the awaiting handler unchanged.

    Type checkers see the methods as returning `Any`: Python's types cannot map a class's
    methods to async ones, and writing each service's signatures twice would let them
    drift apart. Handlers name the result's fields, which tests exercise."""

    def __init__(self, service: S, observe: Callable[[str, str], None] | None = None) -> None:
        self.service = service
        """The synchronous service itself (for code that is already in a thread)."""
        self._observe = observe
        """`observe(method, outcome)` after every call: "ok" or the exception's class
        name (metrics: commands by type and outcome)."""

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        # Only reached when the instance has no such attribute yet: the wrapper made on
        # first use is kept in the instance, so later calls cost a plain lookup.
        if name.startswith("_"):
            raise AttributeError(name)
        method = getattr(self.service, name)
        if not callable(method):
            raise AttributeError(f"{type(self.service).__name__}.{name} is not a method")

        observe = self._observe

        @functools.wraps(method)
        async def call(*args: Any, **kwargs: Any) -> Any:
            if observe is None:
                return await in_thread(method, *args, **kwargs)
            try:
                result = await in_thread(method, *args, **kwargs)
            except Exception as error:
                observe(name, type(error).__name__)
                raise
            observe(name, "ok")
            return result

        self.__dict__[name] = call
        return call

    def __repr__(self) -> str:
        return f"Threaded({self.service!r})"
