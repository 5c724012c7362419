"""Latency and cost of the scheduling features: a job that runs after another, a resumed queue, cron entries, and
what a dependency costs the store per finished job.

Like latency.py, start times are the job's own `date +%s.%N` stamps against a real `queuectl run` subprocess, so
they include the spawn of the shell; the bare spawn floor (latency.spawn_floor_ms) is the baseline.
"""

from __future__ import annotations

import asyncio
import calendar
import random
import shlex
import shutil
import subprocess
import time
from pathlib import Path

from benchmarks import pickup_helper
from benchmarks.common import (
    Row,
    Target,
    clean_env,
    create_home,
    db_rows,
    engine_process,
    percentile,
    qc,
    temp_dir,
)
from benchmarks.latency import spawn_floor_ms
from queuectl import jobspec, paths
from queuectl.api import Queue
from queuectl.jobspec import NewJob
from queuectl.models import Outcome
from queuectl.store.sqlite import SQLiteStore

SAMPLES = 30
GAP_S = 0.1  # the engine idle before each sample, at a random phase
CRON_RUN_S = 20.0
COST_SIZES = (1_000, 10_000)
COST_CLAIM_LIMIT = 16  # an engine with 16 free workers: each claim asks for up to 16
#: Per round: half the small homes, the large one, the other half: both sizes do the same total work over the same
#: span of time, so a burst of other work on the shared cores weighs on both alike (a best-of-N would favour the
#: short runs, which can fall between bursts).
COST_ROUNDS = 2
FLOOR_LABEL = "bare spawn, same percentile"


async def _stamped(path: Path) -> float:
    """The job's own start (or end) stamp, once written."""
    await pickup_helper.wait_written(path)
    return pickup_helper.read_stamp(path)


def _job(job_id: str, command: str, cwd: Path, after: tuple[str, ...] = ()) -> NewJob:
    return jobspec.from_mapping({"id": job_id, "command": command, "after": list(after)}, cwd=str(cwd))


def _date_to(path: Path) -> str:
    return f"exec date +%s.%N > {shlex.quote(str(path))}"


def _latency_rows(bench: str, metric: str, lat_ms: list[float], floor: list[float], bound_ms: float) -> list[Row]:
    return [
        Row(bench, f"p50 {metric}", percentile(lat_ms, 50), "ms", percentile(floor, 50), FLOOR_LABEL),
        Row(bench, f"p95 {metric}", percentile(lat_ms, 95), "ms", percentile(floor, 95), FLOOR_LABEL,
            Target("<=", bound_ms, kind="value")),
        Row(bench, f"max {metric}", max(lat_ms), "ms", max(floor), "bare spawn, max"),
    ]


# ---- dependency_pickup -----------------------------------------------------------------------------------------


def dependency_pickup() -> list[Row]:
    """A then B --after A; latency = B's own start stamp - A's own last stamp (A's command ends with it)."""

    async def go(home: Path, tmp: Path) -> list[float]:
        out = []
        async with Queue(home) as q:
            for i in range(SAMPLES):
                await asyncio.sleep(GAP_S * random.uniform(0.75, 1.25))
                end, start = tmp / f"end{i}", tmp / f"start{i}"
                await q.enqueue([_job(f"a{i}", f"sleep 0.02; {_date_to(end)}", tmp),
                                 _job(f"b{i}", _date_to(start), tmp, after=(f"a{i}",))])
                out.append((await _stamped(start) - await _stamped(end)) * 1000)
                await q.wait([f"a{i}", f"b{i}"], timeout_s=10)
        return out

    with temp_dir("deps") as tmp:
        home = create_home(tmp / "home")
        with engine_process(home, "--workers", "2"):
            time.sleep(0.5)
            lat = asyncio.run(go(home, tmp))
        floor = spawn_floor_ms(tmp)
    return _latency_rows("dependency_pickup", f"A's end -> B (--after A) start, {SAMPLES} samples", lat, floor, 50)


# ---- resume_pickup ---------------------------------------------------------------------------------------------


def resume_pickup() -> list[Row]:
    """Pause, enqueue, let the engine find nothing it may start, resume: latency = the job's own start stamp -
    the time right after Queue.set_paused(paused=False) returned (its commit and the wake-up datagram)."""

    async def go(home: Path, tmp: Path) -> list[float]:
        out = []
        async with Queue(home) as q:
            for i in range(SAMPLES):
                await q.set_paused(["default"], paused=True)
                await q.enqueue([_job(f"r{i}", _date_to(tmp / f"r{i}"), tmp)])
                await asyncio.sleep(GAP_S * random.uniform(0.75, 1.25))  # the engine has seen it and gone idle
                if (tmp / f"r{i}").exists():
                    raise RuntimeError(f"r{i} started while its queue was paused")
                await q.set_paused(["default"], paused=False)
                resumed = time.time()
                out.append((await _stamped(tmp / f"r{i}") - resumed) * 1000)
                await q.wait([f"r{i}"], timeout_s=10)
        return out

    with temp_dir("resume") as tmp:
        home = create_home(tmp / "home")
        with engine_process(home, "--workers", "2"):
            time.sleep(0.5)
            lat = asyncio.run(go(home, tmp))
        floor = spawn_floor_ms(tmp)
    return _latency_rows("resume_pickup", f"set_paused(False) returned -> command start, {SAMPLES} samples", lat,
                         floor, 50)


# ---- cron_punctuality ------------------------------------------------------------------------------------------


def cron_punctuality() -> list[Row]:
    """An every-second entry; each job appends its stamp to stamps/$QUEUECTL_JOB_ID (name@YYYYmmddTHHMMSSZ, the
    due second in UTC): lateness = stamp - due second. Appending shows a second run of one due time."""
    with temp_dir("cron") as tmp:
        home = create_home(tmp / "home")
        stamps = tmp / "stamps"
        stamps.mkdir()
        with engine_process(home, "--workers", "2"):
            subprocess.run(qc(home, "cron", "add", "tick", "* * * * * *", "--",
                              f'date +%s.%N >> {shlex.quote(str(stamps))}/"$QUEUECTL_JOB_ID"'),
                           check=True, capture_output=True, env=clean_env(), cwd=tmp, timeout=30)
            time.sleep(CRON_RUN_S)
            subprocess.run(qc(home, "cron", "remove", "tick"), check=True, capture_output=True, env=clean_env(),
                           timeout=30)
            time.sleep(1.0)  # let the last job write its stamp
        late: list[float] = []
        dues: list[int] = []
        runs = 0
        for path in stamps.iterdir():
            when = path.name.partition("@")[2]
            due = calendar.timegm(time.strptime(when, "%Y%m%dT%H%M%SZ"))
            dues.append(due)
            for line in path.read_text().split():
                runs += 1
                late.append((float(line) - due) * 1000)
        jobs = int(db_rows(home, "SELECT count(*) FROM jobs WHERE cron = 'tick'")[0][0])
        floor = spawn_floor_ms(tmp)
    if not dues:
        raise RuntimeError("the cron entry made no job that ran")
    missing = (max(dues) - min(dues) + 1) - len(set(dues))
    extra = runs - len(dues)  # two runs of one due second
    unrun = jobs - len(dues)  # made by the entry, never started
    rows = _latency_rows("cron_punctuality", f"due second -> command start, {runs} runs", late, floor, 100)
    rows[1].note = f"{jobs} cron jobs in the store, {len(dues)} due seconds stamped"
    rows.append(Row("cron_punctuality", f"due seconds missing, run twice or not run, {len(dues)} in ~{CRON_RUN_S:g}s",
                    missing + extra + unrun, "", target=Target("<=", 0, kind="value"),
                    note=f"missing {missing}, extra runs {extra}, made but not run {unrun}"))
    return rows


# ---- dependency_cost -------------------------------------------------------------------------------------------


def _shape(kind: str, n: int, cwd: str) -> list[NewJob]:
    """chain: j0 <- j1 <- ... (each after the previous); fanin: n independent jobs and one that runs after all
    (the CLI and JSON allow at most jobspec.MAX_AFTER deps per job; the store, used directly here, takes n);
    plain: n independent jobs, the same work without dependencies (context: what the table's size alone costs)."""
    now = time.time()
    if kind == "chain":
        return [NewJob(id=f"j{i}", command="true", run_at=now, cwd=cwd, after=(f"j{i - 1}",) if i else ())
                for i in range(n)]
    jobs = [NewJob(id=f"j{i}", command="true", run_at=now, cwd=cwd) for i in range(n)]
    if kind == "plain":
        return jobs
    return [*jobs, NewJob(id="final", command="true", run_at=now, cwd=cwd, after=tuple(j.id for j in jobs))]


async def _cost_run(home: Path, kind: str, n: int) -> tuple[int, float, float, float]:
    """(jobs, enqueue s, claim+complete wall s and CPU s) on a fresh home. The enqueue's connection is closed
    before the drain, as an enqueuing CLI process exits: its close checkpoints the WAL, so that the drain does not
    pay for the enqueue's 2-3 MB of WAL (a cost that grows with N but is the enqueue's, not a dependency's). The
    CPU time is this process's (event loop and aiosqlite's thread): less at the mercy of other work on the cores."""
    jobs = _shape(kind, n, str(home))
    store = SQLiteStore(home / paths.DB_NAME)
    await store.open()
    try:
        start = time.perf_counter()
        await store.enqueue(jobs, now=time.time())
        enqueue_s = time.perf_counter() - start
    finally:
        await store.close()
    store = SQLiteStore(home / paths.DB_NAME)
    await store.open()
    finished = 0
    try:
        start, cpu = time.perf_counter(), time.process_time()
        while claims := await store.claim_due("bench-engine", now=time.time(), limit=COST_CLAIM_LIMIT):
            for claim in claims:
                t = time.time()
                if not await store.complete(claim, "bench-engine", Outcome(exit_code=0, started_at=t, finished_at=t)):
                    raise RuntimeError(f"complete({claim.job.id}) refused")
                finished += 1
        drain_s, cpu = time.perf_counter() - start, time.process_time() - cpu
    finally:
        await store.close()
    if finished != len(jobs):
        raise RuntimeError(f"{kind} of {n}: {finished} of {len(jobs)} jobs finished")
    return finished, enqueue_s, drain_s, cpu


def dependency_cost() -> list[Row]:
    small, large = COST_SIZES
    rows: list[Row] = []
    with temp_dir("depcost") as tmp:
        for kind, what in (("chain", "chain (each after the previous)"), ("fanin", "fan-in (one job after all)"),
                           ("plain", "no dependencies (context)")):
            totals = {small: [0.0] * 4, large: [0.0] * 4}  # jobs, enqueue s, drain s, drain CPU s
            half = [small] * (large // small // 2)
            for r, n in enumerate([*half, large, *half] * COST_ROUNDS):
                home = create_home(tmp / f"{kind}{n}-{r}")
                for k, x in enumerate(asyncio.run(_cost_run(home, kind, n))):
                    totals[n][k] += x
                shutil.rmtree(home)
            per, enq, cpu = ({n: t[k] / t[0] * 1e6 for n, t in totals.items()} for k in (2, 1, 3))
            base = f"{small:,} jobs"
            rows += [
                Row("dependency_cost", f"claim+complete per finished job, {what}, {large:,} jobs", per[large], "us",
                    per[small], base, None if kind == "plain" else Target("<=", 1.5)),
                Row("dependency_cost", f"CPU per finished job (this process), {what}, {large:,}", cpu[large], "us",
                    cpu[small], base),
                Row("dependency_cost", f"enqueue per job, {what}, {large:,} jobs (one batch)", enq[large], "us",
                    enq[small], base),
            ]
    return rows
