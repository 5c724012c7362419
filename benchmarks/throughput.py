"""Issue 3's throughput targets: the engine in this process against a bare asyncio spawning loop.

The engine runs in-process (`Engine(...).run()` with until_idle) on a fresh SQLite home with every state change
committed; the baselines spawn the same commands with `asyncio.create_subprocess_shell` at the same concurrency and
persist nothing, once with Python 3.11's default child watcher (a thread per child) and once with
`asyncio.PidfdChildWatcher`, the watcher the engine installs. Rounds alternate between all of them so that load
from elsewhere on the machine hits each alike; each figure is the median of the rounds.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from benchmarks.common import Row, Target, create_home, db_rows, insert_jobs, median, temp_dir
from queuectl.engine import Engine, EngineOptions
from queuectl.events import EventLog
from queuectl.store.sqlite import SQLiteStore

JOBS = 2_000
WORKERS = (4, 16)
ROUNDS = 3
SLEEP_JOBS, SLEEP_S, SLEEP_WORKERS = 200, 0.05, 16


async def _bare(n_jobs: int, workers: int, command: str) -> None:
    remaining = n_jobs

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            proc = await asyncio.create_subprocess_shell(command)
            await proc.wait()

    await asyncio.gather(*(worker() for _ in range(workers)))


def _with_watcher(pidfd: bool, coro: Callable[[], Coroutine[Any, Any, None]]) -> float:
    """Seconds for one asyncio.run of coro, with the default child watcher or a pidfd one."""

    async def main() -> float:
        if pidfd:
            watcher = asyncio.PidfdChildWatcher()
            watcher.attach_loop(asyncio.get_running_loop())
            asyncio.set_child_watcher(watcher)
        start = time.perf_counter()
        try:
            await coro()
        finally:
            asyncio.set_child_watcher(None)  # type: ignore[arg-type]  # None: back to the default
        return time.perf_counter() - start

    return asyncio.run(main())


def bare_loop_s(n_jobs: int, workers: int, command: str, *, pidfd: bool) -> float:
    return _with_watcher(pidfd, lambda: _bare(n_jobs, workers, command))


def engine_s(home: Path, workers: int) -> float:
    """Seconds from the start of Engine.run() to its return with every job done (until_idle)."""

    async def main() -> float:
        store = SQLiteStore(home / "queue.db")
        await store.open()
        try:
            options = EngineOptions(home=home, workers=workers, until_idle=True)
            engine = Engine(store, options, EventLog(stream=io.StringIO()))
            start = time.perf_counter()
            await engine.run(handle_signals=False)
            return time.perf_counter() - start
        finally:
            await store.close()

    return asyncio.run(main())


def _engine_round(tmp: Path, tag: str, n_jobs: int, workers: int, command: str) -> float:
    home = create_home(tmp / tag)
    insert_jobs(home, n_jobs, command=command, run_at=time.time(), prefix="j")
    took = engine_s(home, workers)
    done = int(db_rows(home, "SELECT count(*) FROM jobs WHERE state = 'completed'")[0][0])
    if done != n_jobs:
        raise RuntimeError(f"engine completed {done} of {n_jobs} jobs")
    return took


def throughput() -> list[Row]:
    times: dict[tuple[str, int], list[float]] = {}
    with temp_dir("throughput") as tmp:
        for rnd in range(ROUNDS):
            for w in WORKERS:
                times.setdefault(("engine", w), []).append(_engine_round(tmp, f"r{rnd}w{w}", JOBS, w, "true"))
                times.setdefault(("default", w), []).append(bare_loop_s(JOBS, w, "true", pidfd=False))
                times.setdefault(("pidfd", w), []).append(bare_loop_s(JOBS, w, "true", pidfd=True))
    rows = []
    for w in WORKERS:
        rate = {k: JOBS / median(v) for (k, ww), v in times.items() if ww == w}
        metric = f"{JOBS:,} x `true`, {w} workers, durable"
        rows += [
            Row("throughput", metric, rate["engine"], "jobs/s", rate["default"], "bare loop, default watcher",
                Target(">=", 0.8)),
            Row("throughput", metric, rate["engine"], "jobs/s", rate["pidfd"], "bare loop, pidfd watcher",
                Target(">=", 0.8)),
        ]
    return rows


def sleep_jobs() -> list[Row]:
    ideal = SLEEP_JOBS * SLEEP_S / SLEEP_WORKERS
    command = f"sleep {SLEEP_S:g}"
    engine, bare = [], []
    with temp_dir("sleep") as tmp:
        for rnd in range(ROUNDS):
            engine.append(_engine_round(tmp, f"r{rnd}", SLEEP_JOBS, SLEEP_WORKERS, command))
            bare.append(bare_loop_s(SLEEP_JOBS, SLEEP_WORKERS, command, pidfd=True))
    metric = f"{SLEEP_JOBS} x `{command}`, {SLEEP_WORKERS} workers, wall"
    return [
        Row("sleep_jobs", metric, median(engine), "s", ideal, "ideal 200*0.05/16", Target("<=", 1.15)),
        Row("sleep_jobs", metric + " (bare loop, pidfd)", median(bare), "s", ideal, "ideal 200*0.05/16"),
    ]
