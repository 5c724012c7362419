"""Load: a graceful stop with 16 jobs running, 8 processes enqueuing 1,000 jobs each into a running 16-worker
engine, and two engines sharing one database file. Every job appends its id to a runs file (O_APPEND) when it
starts: that file, not the database, says how many times each job ran."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from queuectl.models import AttemptStatus, JobState
from tests.engine_helpers import (
    QUEUECTL,
    Engines,
    attempts_async,
    cli_env,
    enqueue_many,
    jobs,
    wait_until,
)
from tests.torture.support import counters_match, elapsed, engine_logs_clean, forbidden_in, integrity, runs_of


@pytest.fixture
def work(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


def _state_counts(home: Path) -> dict[JobState, int]:
    counts: dict[JobState, int] = {}
    for job in jobs(home).values():
        counts[job.state] = counts.get(job.state, 0) + 1
    return counts


# ---- graceful stop under load -------------------------------------------------------------------------------------

RUNNING = 16


@pytest.mark.timeout(120)
def test_sigterm_with_16_jobs_running_lets_all_16_finish_and_starts_nothing_new(
    home: Path, work: Path, tmp_path: Path, figures: dict[str, Any]
) -> None:
    runs, go = work / "runs", work / "go"
    busy: list[dict[str, Any]] = [{"id": f"busy-{n:02d}", "priority": 5,
             "command": f"echo $QUEUECTL_JOB_ID >> {runs}; while [ ! -f {go} ]; do sleep 0.05; done; "
                        f"echo finished $QUEUECTL_JOB_ID"} for n in range(RUNNING)]
    waiting: list[dict[str, Any]] = [{"id": f"later-{n:02d}", "command": f"echo $QUEUECTL_JOB_ID >> {runs}"}
                                     for n in range(RUNNING)]
    with Engines(home, tmp_path) as engines:
        engine = engines.start(workers=RUNNING)
        enqueue_many(home, busy + waiting, cwd=work)
        wait_until(lambda: len(runs_of(runs)) == RUNNING or None, timeout=30, what=f"{RUNNING} jobs running")
        assert set(runs_of(runs)) == {j["id"] for j in busy}
        t0 = time.monotonic()
        engine.send(signal.SIGTERM)
        engine.wait_log(r"stopping: waiting for 16 running job", timeout=10)
        # The workers that finish now are free: a running engine would claim the 16 waiting jobs.
        go.touch()
        code = engine.wait_exit(timeout=60)
        stop_s = elapsed(t0)
        bad = engine_logs_clean([engine])
    found = jobs(home)
    finished = [i for i, j in found.items() if i.startswith("busy-") and j.state == JobState.COMPLETED]
    started_later = [i for i in runs_of(runs) if i.startswith("later-")]
    figures.update({"jobs running at SIGTERM": RUNNING, "jobs waiting": len(waiting),
                    "finished and recorded": len(finished), "started after SIGTERM": len(started_later),
                    "exit code": code, "seconds from SIGTERM to exit": stop_s, "tracebacks": len(bad)})
    assert code == 0, engine.log()[-3000:]
    assert sorted(finished) == sorted(j["id"] for j in busy)
    for job in busy:
        assert found[job["id"]].attempts == 1 and found[job["id"]].exit_code == 0
    assert started_later == []
    assert all(found[j["id"]].state == JobState.PENDING and found[j["id"]].runs == 0 for j in waiting)
    assert "16 completed" in engine.log_lines()[-1]
    assert not bad


# ---- 8 processes enqueuing into a running engine ---------------------------------------------------------------------

PRODUCERS = 8
PER_PRODUCER = 1000
BATCH = 100
#: Of each producer's jobs, this many go one `queuectl enqueue --id ... -- CMD` at a time (the fast path).
SINGLES = 5


def _produce(home: Path, work: Path, p: int) -> list[tuple[list[str], int, str, str]]:
    """One producer: PER_PRODUCER jobs through `enqueue --file` batches of BATCH, then SINGLES one by one.
    Returns (argv, exit code, stdout, stderr) of every enqueue process it ran."""
    runs = work / "runs"
    ids = [f"p{p}-{i:04d}" for i in range(PER_PRODUCER)]
    results = []
    batched, singles = ids[: PER_PRODUCER - SINGLES], ids[PER_PRODUCER - SINGLES :]
    for start in range(0, len(batched), BATCH):
        path = work / f"batch-{p}-{start}.jsonl"
        path.write_text("".join(json.dumps({"id": i, "command": f"echo $QUEUECTL_JOB_ID >> {runs}"}) + "\n"
                                for i in batched[start : start + BATCH]))
        argv = [*QUEUECTL, "enqueue", "--file", str(path)]
        done = subprocess.run(argv, env=cli_env(home), capture_output=True, text=True, timeout=120, cwd=work,
                              check=False)
        results.append((argv, done.returncode, done.stdout, done.stderr))
    for job_id in singles:
        argv = [*QUEUECTL, "enqueue", "--id", job_id, "--", f"echo $QUEUECTL_JOB_ID >> {runs}"]
        done = subprocess.run(argv, env=cli_env(home), capture_output=True, text=True, timeout=120, cwd=work,
                              check=False)
        results.append((argv, done.returncode, done.stdout, done.stderr))
    return results


@pytest.mark.timeout(400)
def test_8_processes_enqueue_1000_jobs_each_into_a_16_worker_engine_every_job_runs_once(
    home: Path, work: Path, tmp_path: Path, figures: dict[str, Any]
) -> None:
    total = PRODUCERS * PER_PRODUCER
    t0 = time.monotonic()
    with Engines(home, tmp_path) as engines:
        engine = engines.start(workers=16)
        with ThreadPoolExecutor(PRODUCERS) as pool:
            per_producer = list(pool.map(lambda p: _produce(home, work, p), range(PRODUCERS)))
        enqueue_s = elapsed(t0)
        # While it runs the jobs, the queue drains: poll the counts until every job is completed.
        wait_until(lambda: _state_counts(home).get(JobState.COMPLETED, 0) == total or None, timeout=300,
                   interval=1.0, what=f"{total} jobs completed")
        drain_s = elapsed(t0)
        engine.send(signal.SIGTERM)
        assert engine.wait_exit(timeout=30) == 0
        bad = engine_logs_clean([engine])
        store_errors = engine.log().count("store error")
    processes = [r for results in per_producer for r in results]
    refused = [r for r in processes if r[1] != 0 or r[3] != ""]
    locked = [r for r in processes if "locked" in r[3]]
    tracebacks = [r for r in processes if forbidden_in(r[3])]
    printed = [line for r in processes for line in r[2].split()]
    ran = runs_of(work / "runs")
    found = jobs(home)
    not_once = {i: ran[i] for i in found if ran[i] != 1}
    db = home / "queue.db"
    checked = integrity(db)
    figures.update({
        "enqueue processes": len(processes), "producers in parallel": PRODUCERS, "jobs": total,
        "enqueue failures": len(refused), "'database is locked' seen": len(locked),
        "tracebacks": len(tracebacks) + len(bad), "engine store errors": store_errors,
        "jobs run exactly once": sum(1 for i in found if ran[i] == 1), "jobs not run exactly once": len(not_once),
        "integrity_check": checked, "seconds to enqueue all": enqueue_s, "seconds until all completed": drain_s,
        "jobs/s end to end": round(total / drain_s, 1),
    })
    assert not locked, locked[:3]
    assert not refused, refused[:3]
    assert not tracebacks and not bad, (tracebacks[:3], bad[:10])
    assert sorted(printed) == sorted(f"p{p}-{i:04d}" for p in range(PRODUCERS) for i in range(PER_PRODUCER))
    assert len(found) == total
    assert not not_once, f"{len(not_once)} jobs not run exactly once: {list(not_once.items())[:10]}"
    assert checked == "ok"
    assert counters_match(db)
    assert store_errors == 0, engine.log()[-3000:]


# ---- two engines, one database ---------------------------------------------------------------------------------------

TWO_ENGINE_JOBS = 2000


@pytest.mark.timeout(300)
def test_two_engines_on_one_database_never_run_an_attempt_twice(
    home: Path, work: Path, tmp_path: Path, figures: dict[str, Any]
) -> None:
    runs = work / "runs"
    ids = [f"two-{n:04d}" for n in range(TWO_ENGINE_JOBS)]
    t0 = time.monotonic()
    with Engines(home, tmp_path) as engines:
        first, second = engines.start(workers=4), engines.start(workers=4)
        # Enqueued in 10 batches while both engines run: they compete for every claim.
        for start in range(0, TWO_ENGINE_JOBS, 200):
            enqueue_many(home, ({"id": i, "command": f"echo $QUEUECTL_JOB_ID >> {runs}; echo ran $QUEUECTL_JOB_ID"}
                                for i in ids[start : start + 200]), cwd=work)
        wait_until(lambda: _state_counts(home).get(JobState.COMPLETED, 0) == TWO_ENGINE_JOBS or None, timeout=240,
                   interval=0.5, what=f"{TWO_ENGINE_JOBS} jobs completed")
        took = elapsed(t0)
        for engine in (first, second):
            engine.send(signal.SIGTERM)
        codes = [first.wait_exit(timeout=30), second.wait_exit(timeout=30)]
        bad = engine_logs_clean([first, second])
        discarded = first.log().count("not recorded") + second.log().count("not recorded")

    async def all_attempts() -> dict[str, list[Any]]:
        return {i: await attempts_async(home, i) for i in ids}

    history = asyncio.run(all_attempts())
    ran = runs_of(runs)
    by_engine = {first.engine_id: 0, second.engine_id: 0}
    for tried in history.values():
        for a in tried:
            by_engine[a.engine_id] = by_engine.get(a.engine_id, 0) + 1
    twice = {i: ran[i] for i in ids if ran[i] != 1}
    checked = integrity(home / "queue.db")
    figures.update({"jobs": TWO_ENGINE_JOBS, "engines": 2, "workers each": 4,
                    "attempts by engine": json.dumps(list(by_engine.values())),
                    "jobs not run exactly once": len(twice), "results discarded": discarded,
                    "tracebacks": len(bad), "integrity_check": checked, "seconds": took})
    assert codes == [0, 0]
    assert not twice, f"{len(twice)} jobs did not run exactly once: {list(twice.items())[:10]}"
    assert all([a.status for a in tried] == [AttemptStatus.SUCCEEDED] for tried in history.values())
    assert all(n > 0 for n in by_engine.values()), f"one engine did all the work: {by_engine}"
    assert set(by_engine) == {first.engine_id, second.engine_id}
    assert discarded == 0
    assert not bad
    assert checked == "ok"
