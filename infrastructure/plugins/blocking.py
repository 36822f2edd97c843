"""Blocking file work, kept off the event loop.

An executor runs many steps on one event loop; a slow disk must not stall the others,
so plugins open, read, write and sync files in worker threads, a bounded piece at a
time.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

BATCH_RECORDS = 1000
BATCH_BYTES = 1024 * 1024


async def in_thread(function: Callable[..., T], *args: Any) -> T:
    """`function(*args)` in a worker thread. When the task is cancelled meanwhile, the
    thread cannot be interrupted: wait for it to finish (the caller is about to close
    the files it uses), then let the cancellation through."""
    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(None, functools.partial(function, *args))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await future
        raise


async def batched(records: Iterator[T], consumed: Callable[[], int]) -> AsyncIterator[T]:
    """The items of a blocking iterator, advanced in worker threads, a batch (at most
    BATCH_RECORDS items or about BATCH_BYTES of input, as `consumed` counts) at a time."""

    def take() -> list[T]:
        start, batch = consumed(), []
        for record in records:
            batch.append(record)
            if len(batch) >= BATCH_RECORDS or consumed() - start >= BATCH_BYTES:
                break
        return batch

    while batch := await in_thread(take):
        for record in batch:
            yield record
