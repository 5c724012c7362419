"""Issue 3's scale target: per-job engine time and engine RSS with 1,000,000 delayed jobs queued, against the same
with 1,000. The engine is a `queuectl run --until-idle` subprocess, so its RSS is its own: the peak (ru_maxrss from
wait4, the same figure as VmHWM) of the whole run, start-up and the window refill included. Per-job time is the span
from the first due job's start to the last one's end (from the store's attempt rows), divided by the jobs.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

from benchmarks.common import Row, Target, clean_env, create_home, db_rows, insert_jobs, median, qc, temp_dir

SMALL, LARGE = 1_000, 1_000_000
DUE_JOBS = 500
WORKERS = 4
ROUNDS = 3
DAY_S = 86_400.0
ENGINE_TIMEOUT_S = 300.0


def _engine_run(home: Path, rnd: int) -> tuple[float, float, float]:
    """One engine run over DUE_JOBS fresh `true` jobs: (per-job s, max RSS MiB, wall s of the whole process)."""
    prefix = f"due{rnd}-"
    insert_jobs(home, DUE_JOBS, command="true", run_at=time.time(), prefix=prefix)
    start = time.perf_counter()
    with (home / f"engine{rnd}.log").open("wb") as log:
        proc = subprocess.Popen(qc(home, "run", "--workers", str(WORKERS), "--until-idle"), stdout=log, stderr=log,
                                stdin=subprocess.DEVNULL, env=clean_env())
    watchdog = threading.Timer(ENGINE_TIMEOUT_S, proc.kill)  # wait4 has no timeout of its own
    watchdog.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        watchdog.cancel()
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"engine exited with {proc.returncode}: {(home / f'engine{rnd}.log').read_text()[-2000:]}")
    row = db_rows(home, """SELECT count(*), min(a.started_at), max(a.finished_at) FROM attempts a
                           JOIN jobs j ON j.id = a.job_id WHERE j.id LIKE ? AND j.state = 'completed'""",
                  (f"{prefix}%",))[0]
    if row[0] != DUE_JOBS:
        raise RuntimeError(f"{row[0]} of {DUE_JOBS} due jobs completed")
    return (row[2] - row[1]) / DUE_JOBS, usage.ru_maxrss / 1024, wall


def scale() -> list[Row]:
    results: dict[int, list[tuple[float, float, float]]] = {SMALL: [], LARGE: []}
    with temp_dir("scale") as tmp:
        homes = {}
        for n in (SMALL, LARGE):
            homes[n] = create_home(tmp / f"q{n}")
            insert_jobs(homes[n], n, command="true", run_at=time.time() + DAY_S, prefix="later-")
        for rnd in range(ROUNDS):
            for n in (SMALL, LARGE):
                results[n].append(_engine_run(homes[n], rnd))
        db_mib = (homes[LARGE] / "queue.db").stat().st_size / 2**20
    per_job = {n: median([r[0] for r in rs]) * 1e3 for n, rs in results.items()}
    rss = {n: max(r[1] for r in rs) for n, rs in results.items()}
    wall = {n: median([r[2] for r in rs]) for n, rs in results.items()}
    base = f"{SMALL:,} delayed jobs queued"
    return [
        Row("scale", f"per-job time, {DUE_JOBS} due `true` jobs, {LARGE:,} delayed queued", per_job[LARGE], "ms",
            per_job[SMALL], base, Target("<=", 1.5)),
        Row("scale", f"engine max RSS, {LARGE:,} delayed queued", rss[LARGE], "MiB", rss[SMALL], base,
            Target("<=", 1.5)),
        Row("scale", f"engine process wall (start-up to exit), {LARGE:,} delayed queued", wall[LARGE], "s",
            wall[SMALL], base, note=f"database {db_mib:.0f} MiB"),
    ]
