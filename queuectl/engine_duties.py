"""Engine duties beyond running jobs: stopping the commands of jobs that `queuectl cancel` flagged, enqueueing
the jobs of due cron entries, and deleting finished jobs past their retention."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from queuectl import cron, paths
from queuectl.config import Settings
from queuectl.errors import StoreError
from queuectl.events import EventLog
from queuectl.models import Claim, JobState
from queuectl.store.base import Store
from queuectl.textfmt import one_line


async def cancel_watch(
    store: Store, engine_id: str, check: asyncio.Event, claimed: Mapping[str, Claim],
    in_command: Mapping[str, asyncio.Task[None]], cancelling: set[str], on_store_error: Callable[[StoreError], None],
    min_interval_s: float, log: EventLog,
) -> None:
    """Each time `check` is set: cancel the worker task of every running job of this engine that is flagged. The
    worker's runner terminates the job's process group; the worker sees `cancelling` and records it cancelled. A
    flagged job claimed ahead that no worker has started yet is marked in `cancelling` too: it will not start."""
    while True:
        await check.wait()
        check.clear()
        if claimed:
            try:
                flagged = await store.cancel_requests(engine_id)
            except StoreError as exc:
                on_store_error(exc)
                flagged = []
            for job_id in flagged:
                if job_id in cancelling:
                    continue
                task = in_command.get(job_id)
                if task is not None:
                    cancelling.add(job_id)
                    task.cancel()
                    log.emit("cancelling", f"{job_id}: cancel requested, terminating its process group", job=job_id)
                elif job_id in claimed:  # claimed ahead, not started
                    cancelling.add(job_id)
                    log.emit("cancelling", f"{job_id}: cancel requested before it started; it will not run",
                             job=job_id)
        await asyncio.sleep(min_interval_s)  # a storm of changes costs one look per interval


async def cron_loop(
    store: Store, wake: asyncio.Event, on_enqueued: Callable[[list[str]], None],
    on_store_error: Callable[[StoreError], None], max_sleep_s: float, log: EventLog,
) -> None:
    """Tick the store's cron entries; sleep until the next due time, a change from elsewhere (`wake`), or
    max_sleep_s (which bounds the effect of a wall-clock jump). An entry that cannot be read is logged once
    (again if why changes) and tried every cron.UNREADABLE_RETRY_S; the others run."""
    told: dict[str, str] = {}
    while True:
        wake.clear()
        try:
            enqueued, next_at, unreadable = await store.cron_tick(now=time.time())
        except StoreError as exc:
            on_store_error(exc)
            enqueued, next_at, unreadable = [], None, {}
        if enqueued:
            on_enqueued(enqueued)
        for name, why in unreadable.items():
            if told.get(name) != why:
                told[name] = why
                log.emit("cron_unreadable", f"cron entry {one_line(name, 60)} cannot be run: {one_line(why, 200)}; "
                         f"trying again every {cron.UNREADABLE_RETRY_S:g}s (`queuectl cron remove` it, or run a "
                         "queuectl that reads it)", cron=name, error=why)
        timeout = max_sleep_s
        if next_at is not None:
            timeout = min(timeout, max(0.0, next_at - time.time()) + 0.0005)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout)


#: Jobs deleted per transaction by the retention sweep: claims wait for at most one batch.
RETENTION_BATCH = 500


async def retention_sweep(store: Store, home: Path, settings: Settings, now: float) -> dict[JobState, int]:
    """Delete finished jobs older than their state's retention setting, in bounded batches, with their log files
    on this host. Returns how many of each state were deleted."""
    deleted: dict[JobState, int] = {}
    for state, keep_s in ((JobState.COMPLETED, settings.retain_completed_s), (JobState.DEAD, settings.retain_dead_s),
                          (JobState.CANCELLED, settings.retain_cancelled_s)):
        if keep_s is None:
            continue
        while True:
            purged = await store.purge(state, finished_before=now - keep_s, limit=RETENTION_BATCH)
            if purged:  # a few thousand unlink() calls: not in the event loop's thread
                await asyncio.to_thread(paths.remove_logs, home, purged)
                deleted[state] = deleted.get(state, 0) + len(purged)
            if len(purged) < RETENTION_BATCH:
                break
            await asyncio.sleep(0)  # let the workers' claims and results in between batches
    return deleted
