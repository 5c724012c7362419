"""Issue 3's throughput targets: the engine in this process against a bare asyncio spawning loop.

The engine runs in-process (`Engine(...).run()` with until_idle) on a fresh SQLite home with every state change
committed; the baselines spawn the same commands with `asyncio.create_subprocess_shell` at the same concurrency and
persist nothing, once with Python 3.11's default child watcher (a thread per child) and once with
the stock `asyncio.PidfdChildWatcher` (the engine installs a subclass of it that hands exits to their transport
without a self-pipe wake-up). Rounds alternate between all of them so that load
from elsewhere on the machine hits each alike; each figure is the median of the rounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import subprocess
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, NamedTuple

from benchmarks.common import Row, Target, clean_env, create_home, db_rows, insert_jobs, median, qc, temp_dir
from queuectl import exports
from queuectl.engine import Engine, EngineOptions
from queuectl.events import EventLog
from queuectl.store.sqlite import SQLiteStore

JOBS = 2_000
WORKERS = (4, 16)
ROUNDS = 5  # the 2-core VM this was tuned on moves by 10-25% from one second to the next
ENGINE_TIMEOUT_S = 300.0
SLEEP_JOBS, SLEEP_S, SLEEP_WORKERS, SLEEP_ROUNDS = 200, 0.05, 16, 5


class Timing(NamedTuple):
    wall_s: float
    cpu_s: float  # this process, all threads


async def _bare(n_jobs: int, workers: int, command: str) -> None:
    remaining = n_jobs

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            proc = await asyncio.create_subprocess_shell(command)
            await proc.wait()

    await asyncio.gather(*(worker() for _ in range(workers)))


async def _bare_as_required(n_jobs: int, workers: int, command: str) -> None:
    """The bare loop, each spawn as issue 3 requires of the engine and nothing more: QUEUECTL_JOB_ID and
    QUEUECTL_ATTEMPT in the environment (exported by the shell, as the engine does: queuectl/exports.py), stdin
    from /dev/null, its own session, the job's cwd, and stdout and stderr through a pipe read once the command
    ended. No store, no event log."""
    remaining = n_jobs
    stdin = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    cwd = os.getcwd()

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            line = exports.line({"QUEUECTL_JOB_ID": f"j{remaining:07d}", "QUEUECTL_ATTEMPT": "1"}, command) or ""
            read_fd, write_fd = os.pipe()
            os.set_blocking(read_fd, False)
            try:
                proc = await asyncio.create_subprocess_shell(
                    line, stdin=stdin, stdout=write_fd, stderr=subprocess.STDOUT, cwd=cwd,
                    start_new_session=True)
            finally:
                os.close(write_fd)
            await proc.wait()
            with contextlib.suppress(BlockingIOError):
                os.read(read_fd, 1 << 16)
            os.close(read_fd)

    try:
        await asyncio.gather(*(worker() for _ in range(workers)))
    finally:
        os.close(stdin)


async def _timed(coro: Coroutine[Any, Any, object]) -> Timing:
    wall, cpu = time.perf_counter(), time.process_time()
    await coro
    return Timing(time.perf_counter() - wall, time.process_time() - cpu)


def bare_loop(n_jobs: int, workers: int, command: str, *, pidfd: bool, as_required: bool = False) -> Timing:
    """The baseline, with Python 3.11's default child watcher or a pidfd one; as_required: each spawn as the
    engine's must be (see _bare_as_required)."""

    async def main() -> Timing:
        if pidfd:
            watcher = asyncio.PidfdChildWatcher()
            watcher.attach_loop(asyncio.get_running_loop())
            asyncio.set_child_watcher(watcher)
        try:
            spawn = _bare_as_required if as_required else _bare
            return await _timed(spawn(n_jobs, workers, command))
        finally:
            asyncio.set_child_watcher(None)  # type: ignore[arg-type]  # None: back to the default

    return asyncio.run(main())


def run_engine(home: Path, workers: int) -> Timing:
    """From the start of Engine.run() to its return with every job done (until_idle)."""

    async def main() -> Timing:
        store = SQLiteStore(home / "queue.db")
        await store.open()
        try:
            options = EngineOptions(home=home, workers=workers, until_idle=True)
            engine = Engine(store, options, EventLog(stream=io.StringIO()))
            return await asyncio.wait_for(_timed(engine.run(handle_signals=False)), ENGINE_TIMEOUT_S)
        finally:
            await store.close()

    return asyncio.run(main())


def _engine_round(tmp: Path, tag: str, n_jobs: int, workers: int, command: str) -> Timing:
    home = create_home(tmp / tag)
    insert_jobs(home, n_jobs, command=command, run_at=time.time(), prefix="j")
    took = run_engine(home, workers)
    done = int(db_rows(home, "SELECT count(*) FROM jobs WHERE state = 'completed'")[0][0])
    if done != n_jobs:
        raise RuntimeError(f"engine completed {done} of {n_jobs} jobs")
    return took


def _cli_round(tmp: Path, tag: str, workers: int) -> Timing:
    """`queuectl run --until-idle` as a user runs it: a new process, start-up and shut-down included."""
    home = create_home(tmp / tag)
    insert_jobs(home, JOBS, command="true", run_at=time.time(), prefix="j")
    start = time.perf_counter()
    subprocess.run(qc(home, "run", "--workers", str(workers), "--until-idle"), check=True, env=clean_env(),
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=ENGINE_TIMEOUT_S)
    return Timing(time.perf_counter() - start, float("nan"))


def throughput() -> list[Row]:
    runs: dict[tuple[str, int], list[Timing]] = {}
    with temp_dir("throughput") as tmp:
        for rnd in range(ROUNDS):
            for w in WORKERS:
                runs.setdefault(("engine", w), []).append(_engine_round(tmp, f"r{rnd}w{w}", JOBS, w, "true"))
                runs.setdefault(("default", w), []).append(bare_loop(JOBS, w, "true", pidfd=False))
                runs.setdefault(("pidfd", w), []).append(bare_loop(JOBS, w, "true", pidfd=True))
                runs.setdefault(("required", w), []).append(
                    bare_loop(JOBS, w, "true", pidfd=True, as_required=True))
        for w in WORKERS:
            runs[("cli", w)] = [_cli_round(tmp, f"cli{w}", w)]
    rows = []
    for w in WORKERS:
        rate = {k: JOBS / median([t.wall_s for t in ts]) for (k, ww), ts in runs.items() if ww == w}
        cpu_us = {k: median([t.cpu_s for t in ts]) / JOBS * 1e6 for (k, ww), ts in runs.items() if ww == w}
        metric = f"{JOBS:,} x `true`, {w} workers, durable"
        rows += [
            Row("throughput", metric, rate["engine"], "jobs/s", rate["default"], "bare loop, default watcher",
                Target(">=", 0.8)),
            Row("throughput", metric, rate["engine"], "jobs/s", rate["pidfd"], "bare loop, pidfd watcher",
                Target(">=", 0.8)),
            # How much of the gap to the pidfd loop the issue's own requirements for a spawn explain (for context).
            Row("throughput", f"{metric}; the baseline: the pidfd loop spawning as the issue requires (job "
                "variables, own session, output pipe), no store", rate["engine"], "jobs/s", rate["required"],
                "bare loop, pidfd, spawns as required"),
            Row("throughput", f"{metric}, `queuectl run --until-idle` process (1 run)", rate["cli"], "jobs/s",
                rate["pidfd"], "bare loop, pidfd watcher"),
            Row("throughput", f"CPU per job in the spawning process, {w} workers", cpu_us["engine"], "us",
                cpu_us["pidfd"], "bare loop, pidfd watcher"),
        ]
        # Each round's engine run and pidfd-loop run are seconds apart: their ratio shows how far the machine's
        # drift moves the figure above (for context; the target stays the ratio of the medians).
        paired = sorted(p.wall_s / e.wall_s for e, p in zip(runs[("engine", w)], runs[("pidfd", w)], strict=True))
        rows.append(Row("throughput", f"{metric}: engine / pidfd loop in each round, min {paired[0]:.2f}x, "
                        f"max {paired[-1]:.2f}x, median", median(paired), "x"))
    return rows


def sleep_jobs() -> list[Row]:
    ideal = SLEEP_JOBS * SLEEP_S / SLEEP_WORKERS
    command = f"sleep {SLEEP_S:g}"
    engine, bare = [], []
    with temp_dir("sleep") as tmp:
        for rnd in range(SLEEP_ROUNDS):
            engine.append(_engine_round(tmp, f"r{rnd}", SLEEP_JOBS, SLEEP_WORKERS, command).wall_s)
            bare.append(bare_loop(SLEEP_JOBS, SLEEP_WORKERS, command, pidfd=True).wall_s)
    metric = f"{SLEEP_JOBS} x `{command}`, {SLEEP_WORKERS} workers, wall"
    return [
        Row("sleep_jobs", metric, median(engine), "s", ideal, "ideal 200*0.05/16", Target("<=", 1.15)),
        Row("sleep_jobs", metric + " (bare loop, pidfd)", median(bare), "s", ideal, "ideal 200*0.05/16"),
    ]
