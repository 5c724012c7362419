"""Crash loop on SQLite: 2,000 jobs (quick ones, short sleeps, failing commands, commands that time out) while a real
`queuectl run --workers 8` process is SIGKILLed at random moments 50 times (some during start-up and recovery, most
while it runs jobs) and restarted each time; then one engine drains the queue.

Afterwards every job is in the state its command deserves (completed, or dead after its retries), none is lost,
`PRAGMA integrity_check` is ok, the state counters agree with the rows, no job process survives, and a job ran more
than its counted attempts only if it was interrupted by a kill: re-runs <= interrupted attempts <= kills x held,
where held = workers + claim_ahead_jobs(workers) is the most jobs an engine holds (running, claimed ahead, or ended
with the result not yet recorded): 16 for 8 workers. Every job appends its id to a runs file (O_APPEND) when it
starts, which is how runs are counted independently of the database.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from typing import Any

import pytest

from queuectl.engine_options import claim_ahead_jobs
from queuectl.models import AttemptStatus, JobState
from tests.engine_helpers import Engines, _processes_of_home, attempts, cli, config_set, enqueue_many, jobs
from tests.torture.support import counters_match, elapsed, engine_logs_clean, integrity, runs_of

JOBS = 2000
KILLS = 50
WORKERS = 8
#: The most jobs one engine holds in the store: running, claimed ahead, or ended with the result not yet recorded.
HELD = WORKERS + claim_ahead_jobs(WORKERS)
MAX_RETRIES = 1
#: The kill loop's own bound (the drain after it has another).
LOOP_BUDGET_S = 200.0
SEED = int(os.environ.get("QUEUECTL_TORTURE_SEED", "20261122"))


def _specs(work: Path, rng: random.Random) -> dict[str, tuple[str, dict[str, Any]]]:
    """id -> (kind, job). Kinds: ok (`true`-like), sleep (0.05-0.3 s), fail (exit 3), timeout (sleeps past its
    0.3-0.5 s timeout). Every command first appends its id to work/runs."""
    runs = work / "runs"
    specs: dict[str, tuple[str, dict[str, Any]]] = {}
    for n in range(JOBS):
        head = f"echo $QUEUECTL_JOB_ID >> {runs}"
        roll = rng.random()
        if roll < 0.55:
            kind, job = "ok", {"command": f"{head}; true"}
        elif roll < 0.80:
            kind, job = "sleep", {"command": f"{head}; sleep {rng.choice(['0.05', '0.1', '0.2', '0.3'])}"}
        elif roll < 0.92:
            kind, job = "fail", {"command": f"{head}; exit 3"}
        else:
            kind, job = "timeout", {"command": f"{head}; sleep 30", "timeout": rng.choice(["0.3s", "0.4s", "0.5s"])}
        job_id = f"{kind}-{n:04d}"
        specs[job_id] = (kind, {"id": job_id, **job})
    return specs


def _kill_loop(engines: Engines, rng: random.Random) -> dict[str, int]:
    """Start an engine and SIGKILL it at a random moment, KILLS times. Returns counts of where the kills fell."""
    where = {"during start-up": 0, "while running jobs": 0}
    loop_started = time.monotonic()
    for _ in range(KILLS):
        assert time.monotonic() - loop_started < LOOP_BUDGET_S, f"kill loop over its {LOOP_BUDGET_S:g}s budget"
        if rng.random() < 0.2:  # imports, opening the database, registering, killing leftovers, recovering
            engine = engines.start(workers=WORKERS, wait=False)
            where["during start-up"] += 1
            moment = rng.uniform(0.05, 0.8)
        else:  # claims, spawns, results, retries, timeouts, heartbeats
            engine = engines.start(workers=WORKERS)
            where["while running jobs"] += 1
            moment = rng.uniform(0.05, 1.2)
        time.sleep(moment)  # the random moment of the kill: the scenario itself, not a synchronisation
        assert engine.returncode is None, f"engine exited by itself ({engine.returncode}):\n{engine.log()[-3000:]}"
        engine.kill9()
    return where


@pytest.mark.timeout(420)
def test_engine_sigkilled_50_times_loses_no_job_and_reruns_only_interrupted_ones(
    home: Path, tmp_path: Path, figures: dict[str, Any]
) -> None:
    t0 = time.monotonic()
    work = tmp_path / "work"
    work.mkdir()
    rng = random.Random(SEED)
    specs = _specs(work, rng)
    for key, value in (("max-retries", str(MAX_RETRIES)), ("backoff-base", "1.1"), ("backoff-max", "2s"),
                       ("kill-grace", "0.2s")):
        config_set(home, key, value)
    enqueue_many(home, (job for _, job in specs.values()), cwd=work)

    with Engines(home, tmp_path) as engines:
        where = _kill_loop(engines, rng)
        loop_s = elapsed(t0)
        # One more engine, left alone: it kills the last victim's leftovers, recovers its jobs, drains the queue.
        drain = cli(home, "run", "--workers", str(WORKERS), "--until-idle", timeout=240)
        assert drain.returncode == 0, drain.stderr[-3000:]
        bad_lines = engine_logs_clean(engines.started)
        recovered = sum(e.log().count(" recovered ") for e in engines.started) + drain.stderr.count(" recovered ")
    survivors = _processes_of_home(home)

    found = jobs(home)
    history = {job_id: attempts(home, job_id) for job_id in found}
    wrong: list[str] = []
    for job_id, (kind, _job) in specs.items():
        if job_id not in found:
            wrong.append(f"{job_id} ({kind}): lost")
            continue
        job, tried = found[job_id], history[job_id]
        counted = [a.status for a in tried if a.status != AttemptStatus.INTERRUPTED]
        ok = len(counted) == job.attempts and job.runs == len(tried) and job.engine_id is None
        if kind in ("ok", "sleep"):
            ok = ok and job.state == JobState.COMPLETED and counted == [AttemptStatus.SUCCEEDED]
        elif kind == "fail":
            ok = ok and job.state == JobState.DEAD and counted == [AttemptStatus.FAILED] * (MAX_RETRIES + 1)
        else:
            ok = ok and job.state == JobState.DEAD and counted == [AttemptStatus.TIMED_OUT] * (MAX_RETRIES + 1)
        if not ok:
            wrong.append(f"{job_id} ({kind}): {job.state.value}, attempts {job.attempts}, runs {job.runs}, "
                         f"history {[a.status.value for a in tried]}")

    starts = runs_of(work / "runs")
    counted_total = sum(j.attempts for j in found.values())
    reruns = sum(starts.values()) - counted_total
    interrupted = sum(a.status == AttemptStatus.INTERRUPTED for tried in history.values() for a in tried)
    db = home / "queue.db"
    checked = integrity(db)
    figures.update({
        "jobs": len(specs), "kinds": json.dumps({k: sum(1 for kk, _ in specs.values() if kk == k)
                                                 for k in ("ok", "sleep", "fail", "timeout")}),
        "kills (SIGKILL)": KILLS, "kills by moment": json.dumps(where), "workers": WORKERS, "seed": SEED,
        "jobs lost": sum(1 for i in specs if i not in found), "jobs in a wrong state": len(wrong),
        "interrupted attempts": interrupted, "recoveries logged": recovered,
        "job starts": sum(starts.values()), "counted attempts": counted_total,
        "re-runs": reruns, "bound on re-runs and interrupted attempts (kills x held)": KILLS * HELD,
        "tracebacks / internal errors": len(bad_lines), "integrity_check": checked,
        "surviving job processes": len(survivors), "kill loop seconds": loop_s,
    })
    assert set(found) == set(specs), f"seed {SEED}: jobs lost or invented"
    assert not wrong, f"seed {SEED}: {len(wrong)} job(s) not in their deserved state:\n" + "\n".join(wrong[:20])
    assert checked == "ok"
    assert counters_match(db), "the per-state counters disagree with the rows"
    assert not bad_lines, "\n".join(bad_lines[:20])
    assert not survivors, f"job processes still running after the drain: {survivors}"
    assert all(starts[i] >= found[i].attempts for i in found), "a counted attempt never started its command"
    assert all(starts[i] <= len(history[i]) for i in found), "a command ran without an attempt recorded for it"
    assert 0 <= reruns <= interrupted <= KILLS * HELD, (
        f"seed {SEED}: {reruns} re-runs, {interrupted} interrupted attempts after {KILLS} kills, {HELD} jobs held")
