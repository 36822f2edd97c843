"""The event loop of Norn's own long-running processes (the roles of `norn serve`, `norn
relay`, `norn projector`, ...): uvloop where it is installed, as uvicorn already picks
for the HTTP processes. The roles are CPU-bound under load (decoding NATS messages,
psycopg's async waits, publishing) and asyncio's pure-Python loop was a fifth of the
roles process's samples in bench/commands.py."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # not on Windows (pyproject.toml): asyncio's own loop
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run(main) on the faster loop where there is one."""
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(main)
