"""Issue 3's latency targets against a running `queuectl run` subprocess: pickup of a job enqueued from another
process while the engine is idle, and how punctually a scheduled retry starts.

Start times are taken by the job's own command (`date +%s.%N`), so they include the spawn of the shell and date:
the moment the command really starts, not the moment the engine decided to start it.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import subprocess
import time
from pathlib import Path

from benchmarks import pickup_helper
from benchmarks.common import (
    PYTHON,
    Row,
    Target,
    clean_env,
    create_home,
    db_rows,
    engine_process,
    enqueue,
    job,
    median,
    percentile,
    temp_dir,
    wait_until,
)
from queuectl.api import JobDetail, Queue

REPO = Path(__file__).resolve().parent.parent
PICKUP_SAMPLES = 50
PICKUP_GAP_S = 0.2
RETRY_JOBS = 40
RETRY_DELAY_S = 1.0  # backoff-base 1: the first retry waits 1 ^ 1 s
#: First attempts are staggered so that retries fall due one by one, not in a burst.
RETRY_SPACING_S = 0.07


def spawn_floor_ms(tmp: Path, samples: int = 20) -> list[float]:
    """The floor under both latencies: from a time.time() in a bare asyncio loop (pidfd watcher) to the same
    `date` command's own stamp, spawned at once with create_subprocess_shell. No store, no wake-up."""

    async def main() -> list[float]:
        watcher = asyncio.PidfdChildWatcher()
        watcher.attach_loop(asyncio.get_running_loop())
        asyncio.set_child_watcher(watcher)
        out = []
        try:
            for i in range(samples):
                path = tmp / f"floor{i}"
                start = time.time()
                proc = await asyncio.create_subprocess_shell(f"exec date +%s.%N > {shlex.quote(str(path))}")
                await proc.wait()
                out.append((pickup_helper.read_stamp(path) - start) * 1000)
                await asyncio.sleep(0.01)
        finally:
            asyncio.set_child_watcher(None)  # type: ignore[arg-type]
        return out

    return asyncio.run(main())


def pickup_latency() -> list[Row]:
    with temp_dir("pickup") as tmp:
        home = create_home(tmp / "home")
        with engine_process(home, "--workers", "4"):
            time.sleep(0.5)  # past the start-up work: an idle engine
            out = subprocess.run(
                [PYTHON, "-m", "benchmarks.pickup_helper", str(home), str(PICKUP_SAMPLES), str(PICKUP_GAP_S)],
                check=False, capture_output=True, text=True, env={**clean_env(), "PYTHONPATH": str(REPO)}, cwd=tmp,
                timeout=PICKUP_SAMPLES * (PICKUP_GAP_S + 10))
        if out.returncode != 0:
            raise RuntimeError(f"pickup helper failed ({out.returncode}): {out.stderr[-2000:]}")
        commits = json.loads(out.stdout)
        starts = [pickup_helper.read_stamp(pickup_helper.stamp_path(home, f"p{i}")) for i in range(PICKUP_SAMPLES)]
        floor = spawn_floor_ms(tmp)
    lat_ms = [(s - c) * 1000 for s, c in zip(starts, commits, strict=True)]
    metric = f"enqueue commit -> command start, engine idle, {PICKUP_SAMPLES} samples"
    label = "bare spawn, same percentile"
    return [
        Row("pickup_latency", f"p50 {metric}", percentile(lat_ms, 50), "ms", percentile(floor, 50), label,
            Target("<=", 20, kind="value")),
        Row("pickup_latency", f"p95 {metric}", percentile(lat_ms, 95), "ms", percentile(floor, 95), label,
            Target("<=", 50, kind="value")),
        Row("pickup_latency", f"max {metric}", max(lat_ms), "ms", max(floor), "bare spawn, max"),
    ]


async def _retry_after_one_second(home: Path) -> None:
    async with Queue(home) as q:
        await q.config_set("backoff-base", "1")
        await q.config_set("max-retries", "3")


async def _details(home: Path, ids: list[str]) -> list[JobDetail]:
    """What `queuectl inspect --json` shows, with the times as floats rather than millisecond ISO strings."""
    async with Queue(home) as q:
        return [await q.inspect(i) for i in ids]


def retry_punctuality() -> list[Row]:
    with temp_dir("retry") as tmp:
        home = create_home(tmp / "home")
        stamps = tmp / "stamps"
        stamps.mkdir()
        asyncio.run(_retry_after_one_second(home))
        command = (f'date +%s.%N > {shlex.quote(str(stamps))}/"$QUEUECTL_JOB_ID.$QUEUECTL_ATTEMPT"; '
                   'test "$QUEUECTL_ATTEMPT" -ge 2')
        ids = [f"r{i}" for i in range(RETRY_JOBS)]
        with engine_process(home, "--workers", "4"):
            first = time.time() + 0.5
            run_at = {i: first + n * RETRY_SPACING_S for n, i in enumerate(ids)}
            enqueue(home, [job(i, command, run_at=run_at[i], cwd=tmp) for i in ids])
            wait_until(lambda: _completed(home) == RETRY_JOBS, 30 + RETRY_JOBS * RETRY_SPACING_S,
                       "every retried job to complete", poll_s=0.1)
        details = asyncio.run(_details(home, ids))
        late, engine_late, first_late = [], [], []
        for d in details:
            a1, a2 = d.attempts[0], d.attempts[1]
            due = d.job.run_at  # the retry's run_at: attempt 1's end + the delay, as the engine scheduled it
            if a1.finished_at is None or abs(due - (a1.finished_at + RETRY_DELAY_S)) > 0.001:
                raise RuntimeError(f"{d.job.id}: retry due at {due}, not attempt 1's end + {RETRY_DELAY_S}s")
            late.append((pickup_helper.read_stamp(stamps / f"{d.job.id}.2") - due) * 1000)
            engine_late.append((a2.started_at - due) * 1000)
            first_late.append((pickup_helper.read_stamp(stamps / f"{d.job.id}.1") - run_at[d.job.id]) * 1000)
        floor = spawn_floor_ms(tmp)
    metric = f"retry due -> command start, {RETRY_JOBS} retries"
    label = "bare spawn, same percentile"
    return [
        Row("retry_punctuality", f"p95 {metric}", percentile(late, 95), "ms", percentile(floor, 95), label,
            Target("<=", 20, kind="value")),
        Row("retry_punctuality", f"p50 {metric}", median(late), "ms", median(floor), label),
        Row("retry_punctuality", f"p95 retry due -> engine's attempt start (store), {RETRY_JOBS} retries",
            percentile(engine_late, 95), "ms"),
        Row("retry_punctuality", f"p95 run_at -> command start, {RETRY_JOBS} delayed first attempts",
            percentile(first_late, 95), "ms"),
    ]


def _completed(home: Path) -> int:
    return int(db_rows(home, "SELECT count(*) FROM jobs WHERE state = 'completed'")[0][0])
