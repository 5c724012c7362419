"""Claiming ahead: while a backlog of short jobs is due, each store round claims up to claim_ahead_jobs(workers)
jobs beyond the idle workers, so a worker starts its next job without waiting for the store. Long jobs are never
claimed ahead; a job claimed ahead can still be cancelled (it never starts), runs before a graceful stop ends, and
is given back by a fast one.

A job's `started_at` is when it was claimed and its attempt's `started_at` when its command started, so with one
worker "claimed ahead" reads: claimed before the previous job's command ended.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from queuectl.api import Queue
from queuectl.models import AttemptStatus, Job, JobState
from tests.engine_helpers import async_jobs, await_states, await_until, engine_in_process, run_until_idle
from tests.test_engine import add


async def _claimed_before_previous_ended(home: Path, ids: list[str]) -> list[str]:
    """With one worker running jobs in `ids` order: the jobs claimed while the previous one still ran."""
    async with Queue(home) as q:
        found = await async_jobs(q)
        ends = {i: (await q.store.attempts(i))[-1].finished_at for i in ids}
    early = []
    for before, after in itertools.pairwise(ids):
        claimed_at, previous_end = found[after].started_at, ends[before]
        assert claimed_at is not None and previous_end is not None
        if claimed_at < previous_end:
            early.append(after)
    return early


async def _enqueue_in_order(q: Queue, work: Path, n: int, command: str) -> list[str]:
    """n jobs that one worker runs in this order (falling priority, all above 1)."""
    return [await add(q, f"j{i:03d}", command, work, priority=n - i + 1) for i in range(n)]


async def test_a_backlog_of_short_jobs_is_claimed_ahead(home: Path, work: Path) -> None:
    async with Queue(home) as q:
        ids = await _enqueue_in_order(q, work, 200, "true")
    summary, _ = await run_until_idle(home, workers=1, timeout=60)
    assert summary.completed == 200
    early = await _claimed_before_previous_ended(home, ids)
    assert len(early) > 100, f"only {len(early)} of 200 short jobs were claimed ahead"


async def test_long_jobs_are_never_claimed_ahead(home: Path, work: Path) -> None:
    async with Queue(home) as q:  # 0.2 s each, over the 0.1 s average below which jobs are claimed ahead
        ids = await _enqueue_in_order(q, work, 6, "sleep 0.2")
    summary, _ = await run_until_idle(home, workers=1, timeout=60)
    assert summary.completed == 6
    assert await _claimed_before_previous_ended(home, ids) == []


async def test_claiming_ahead_can_be_turned_off_by_config(home: Path, work: Path) -> None:
    async with Queue(home) as q:
        ids = await _enqueue_in_order(q, work, 60, "true")
        await q.config_set("claim-ahead-below", "0")
    summary, _ = await run_until_idle(home, workers=1, timeout=60)
    assert summary.completed == 60
    assert await _claimed_before_previous_ended(home, ids) == []


async def _one_claimed_ahead(q: Queue, work: Path) -> None:
    """20 short jobs, then `hold` (runs until the file `go` exists), then `ahead`, claimed ahead while hold runs."""
    await _enqueue_in_order(q, work, 20, "true")
    await add(q, "hold", f"while [ ! -e {work}/go ]; do sleep 0.01; done", work, priority=1)
    await add(q, "ahead", f"touch {work}/ran", work, priority=0)


async def _hold_running_and_ahead_claimed(q: Queue) -> dict[str, Job]:
    found: dict[str, Job] = await await_until(
        lambda: _both_processing(q), timeout=30, what="hold running and ahead claimed ahead")
    return found


async def _both_processing(q: Queue) -> dict[str, Job] | None:
    found = await async_jobs(q)
    both = found["hold"].state == found["ahead"].state == JobState.PROCESSING
    return found if both else None


async def test_a_job_claimed_ahead_can_be_cancelled_and_never_starts(home: Path, work: Path) -> None:
    async with engine_in_process(home, workers=1) as (_, q, log):
        await _one_claimed_ahead(q, work)
        await _hold_running_and_ahead_claimed(q)
        await q.cancel(["ahead"])
        await await_until(lambda: "ahead: cancel requested before it started" in log.getvalue(), timeout=10,
                          what="the engine to take the cancel request")
        (work / "go").touch()
        await await_states(q, {"hold": JobState.COMPLETED, "ahead": JobState.CANCELLED})
        (attempt,) = await q.store.attempts("ahead")
    assert attempt.status == AttemptStatus.CANCELLED
    assert attempt.error == "cancelled by `queuectl cancel` before it started"
    assert not (work / "ran").exists()


async def test_a_graceful_stop_runs_the_jobs_claimed_ahead(home: Path, work: Path) -> None:
    async with engine_in_process(home, workers=1) as (engine, q, _):
        await _one_claimed_ahead(q, work)
        await _hold_running_and_ahead_claimed(q)
        engine.request_stop()
        (work / "go").touch()
    async with Queue(home) as q:
        found = await async_jobs(q)
        assert found["hold"].state == found["ahead"].state == JobState.COMPLETED
        assert [a.status for a in await q.store.attempts("ahead")] == [AttemptStatus.SUCCEEDED]
    assert (work / "ran").exists()


async def test_a_fast_stop_gives_back_the_jobs_claimed_ahead(home: Path, work: Path) -> None:
    async with engine_in_process(home, workers=1) as (engine, q, _):
        await _one_claimed_ahead(q, work)
        await _hold_running_and_ahead_claimed(q)
        engine.request_stop(fast=True)
    async with Queue(home) as q:
        found = await async_jobs(q)
        assert found["hold"].state == found["ahead"].state == JobState.PENDING
        assert found["ahead"].attempts == 0  # given back without spending an attempt
        assert [a.status for a in await q.store.attempts("ahead")] == [AttemptStatus.INTERRUPTED]
    assert not (work / "ran").exists()
