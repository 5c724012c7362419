"""Two of the engine's background duties, each a loop of its own: stopping the commands of jobs that
`queuectl cancel` flagged, and enqueueing the jobs of due cron entries."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping

from queuectl.errors import StoreError
from queuectl.store.base import Store


async def cancel_watch(
    store: Store, engine_id: str, check: asyncio.Event, in_command: Mapping[str, asyncio.Task[None]],
    cancelling: set[str], on_store_error: Callable[[StoreError], None], min_interval_s: float,
) -> None:
    """Each time `check` is set: cancel the worker task of every running job of this engine that is flagged. The
    worker's runner terminates the job's process group; the worker sees `cancelling` and records it cancelled."""
    while True:
        await check.wait()
        check.clear()
        if in_command:
            try:
                flagged = await store.cancel_requests(engine_id)
            except StoreError as exc:
                on_store_error(exc)
                flagged = []
            for job_id in flagged:
                task = in_command.get(job_id)
                if task is not None and job_id not in cancelling:
                    cancelling.add(job_id)
                    task.cancel()
        await asyncio.sleep(min_interval_s)  # a storm of changes costs one look per interval


async def cron_loop(
    store: Store, wake: asyncio.Event, on_enqueued: Callable[[list[str]], None],
    on_store_error: Callable[[StoreError], None], max_sleep_s: float,
) -> None:
    """Tick the store's cron entries; sleep until the next due time, a change from elsewhere (`wake`), or
    max_sleep_s (which bounds the effect of a wall-clock jump)."""
    while True:
        wake.clear()
        try:
            enqueued, next_at = await store.cron_tick(now=time.time())
        except StoreError as exc:
            on_store_error(exc)
            enqueued, next_at = [], None
        if enqueued:
            on_enqueued(enqueued)
        timeout = max_sleep_s
        if next_at is not None:
            timeout = min(timeout, max(0.0, next_at - time.time()) + 0.0005)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout)
