"""Small asyncio helpers shared by the runner and the engine."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


async def finish_even_if_cancelled(coro: Coroutine[Any, Any, T]) -> T:
    """Run cleanup that must complete (kill and reap a process group, record a released job) even when the
    caller is cancelled meanwhile; the cancellation is re-raised afterwards. (anyio's shielded CancelScope does
    not hold off a native Task.cancel(), which is how the engine stops its workers.)"""
    task = asyncio.ensure_future(coro)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(task)
            break
        except asyncio.CancelledError:
            if task.done() and not task.cancelled():
                result = task.result()
                break
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return result
