"""Crash loop on PostgreSQL: a `queuectl run` process on a fresh schema of the real server is SIGKILLed at random
moments (during start-up, while idle, in the middle of claims and results) at least 20 times and restarted each
time; then one engine drains the queue. Every job must end in the state it deserves, none may be lost, and the
re-runs (job starts beyond the attempts that counted) must stay within the interrupted attempts, and those within
kills x (workers + claim_ahead_jobs(workers)): the most jobs an engine holds (running, claimed ahead, or ended with
the result not yet recorded); only the ones whose command had started run again.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from queuectl.engine_options import claim_ahead_jobs
from queuectl.models import Attempt, AttemptStatus, Job, JobState
from tests.engine_helpers import Engines, cli, cli_ok, kill_processes_of_home
from tests.pg import postgres_url, reserve_schema, skip_unless_reachable, url_with_schema

psycopg = pytest.importorskip("psycopg", reason="PostgreSQL store not available (pip install .[postgres])")
from psycopg.rows import dict_row  # noqa: E402

from queuectl.store.postgres import PostgresStore  # noqa: E402

KILLS = 20
WORKERS = 4
N_OK, N_FAIL, N_FLAKY = 240, 30, 30
#: Seconds the loop may take at most (the drain that follows has its own bound).
LOOP_BUDGET_S = 75.0


def _job_specs(work: Path, rng: random.Random) -> dict[str, tuple[str, dict[str, object]]]:
    """id -> (kind, spec). Every job appends its id to work/runs when it starts, then sleeps a little."""
    runs, flags = work / "runs", work / "flags"
    specs: dict[str, tuple[str, dict[str, object]]] = {}
    for n in range(N_OK + N_FAIL + N_FLAKY):
        nap = rng.choice(["0", "0.05", "0.1", "0.2"])
        head = f"echo $QUEUECTL_JOB_ID >> {runs}; sleep {nap}"
        if n < N_OK:
            job_id, kind, command, extra = f"ok{n:03d}", "ok", head, {}
        elif n < N_OK + N_FAIL:
            job_id, kind, command, extra = f"fail{n:03d}", "fail", f"{head}; exit 3", {"max_retries": 1}
        else:  # fails its first full run, succeeds after
            job_id, kind = f"flaky{n:03d}", "flaky"
            flag = f"{flags}/$QUEUECTL_JOB_ID"
            command = f"{head}; if [ -e {flag} ]; then exit 0; fi; touch {flag}; exit 1"
            extra = {"max_retries": 3}
        specs[job_id] = (kind, {"id": job_id, "command": command, **extra})
    return specs


def _read(url: str) -> tuple[dict[str, Job], dict[str, list[Attempt]]]:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        jobs = {r["id"]: Job.from_row(r) for r in conn.execute("SELECT * FROM jobs").fetchall()}
        attempts: dict[str, list[Attempt]] = {}
        for r in conn.execute("SELECT * FROM attempts ORDER BY job_id, number").fetchall():
            attempts.setdefault(r["job_id"], []).append(Attempt.from_row(r))
    return jobs, attempts


async def _migrate(url: str) -> None:
    store = PostgresStore(url)
    await store.open()
    await store.close()


def _kill_loop(home: Path, tmp_path: Path, env: dict[str, str], rng: random.Random) -> int:
    """Start an engine, SIGKILL it at a random moment, KILLS times; returns the number of kills."""
    kills = 0
    loop_started = time.monotonic()
    with Engines(home, tmp_path) as engines:
        while kills < KILLS:
            assert time.monotonic() - loop_started < LOOP_BUDGET_S, f"only {kills} kills in {LOOP_BUDGET_S:g}s"
            if rng.random() < 0.25:  # somewhere in start-up: imports, connecting, registering, recovering
                engine = engines.start(workers=WORKERS, wait=False, env=env)
                moment = rng.uniform(0.05, 1.0)
            else:  # while it runs jobs: in a claim, a spawn, a result, a heartbeat...
                engine = engines.start(workers=WORKERS, env=env)
                moment = rng.uniform(0.0, 0.8)
            time.sleep(moment)  # the random moment of the kill, not a synchronisation
            assert engine.returncode is None, f"engine exited by itself ({engine.returncode}):\n{engine.log()}"
            engine.kill9()
            kills += 1
            assert "Traceback" not in engine.log(), engine.log()
    return kills


def test_engine_sigkilled_20_times_at_random_loses_nothing_and_reruns_only_interrupted_ones(
        home: Path, tmp_path: Path, figures: dict[str, Any]) -> None:
    base = postgres_url()
    skip_unless_reachable(base)
    url = url_with_schema(base, reserve_schema(base))
    env = {"QUEUECTL_DATABASE_URL": url}
    asyncio.run(_migrate(url))
    work = tmp_path / "work"
    (work / "flags").mkdir(parents=True)
    seed = int(os.environ.get("QUEUECTL_TEST_CRASHLOOP_SEED") or random.randrange(1 << 30))  # to replay a failure
    rng = random.Random(seed)
    specs = _job_specs(work, rng)
    cli_ok(home, "config", "set", "backoff-max", "0.05s", env=env)
    cli_ok(home, "enqueue", "--file", "-", input="".join(json.dumps(s) + "\n" for _, s in specs.values()),
           cwd=work, env=env, timeout=60)

    try:
        kills = _kill_loop(home, tmp_path, env, rng)
        # One engine more, left to finish: it recovers the last victim's jobs and drains the queue.
        drain = cli(home, "run", "--workers", str(WORKERS), "--until-idle", env=env, timeout=90)
        assert drain.returncode == 0, drain.stderr[-3000:]
    finally:
        kill_processes_of_home(home)

    jobs, attempts = _read(url)
    assert set(jobs) == set(specs), "jobs lost or invented"
    wrong: list[str] = []
    for job_id, (kind, _spec) in specs.items():
        job, history = jobs[job_id], attempts.get(job_id, [])
        counted = [a for a in history if a.status != AttemptStatus.INTERRUPTED]
        ok = len(counted) == job.attempts and job.runs == len(history) and job.engine_id is None
        if kind == "ok":
            ok = ok and job.state == JobState.COMPLETED and [a.status for a in counted] == [AttemptStatus.SUCCEEDED]
        elif kind == "fail":
            ok = ok and job.state == JobState.DEAD and [a.status for a in counted] == [AttemptStatus.FAILED] * 2
        else:  # a kill between its `touch` and the recording of the failure makes the failure uncounted
            ok = ok and job.state == JobState.COMPLETED and counted[-1:] == [a for a in counted
                                                                            if a.status == AttemptStatus.SUCCEEDED]
            ok = ok and len(counted) in (1, 2)
        if not ok:
            wrong.append(f"{job_id} ({kind}): {job.state.value}, attempts {job.attempts}, runs {job.runs}, "
                         f"history {[a.status.value for a in history]}")
    assert not wrong, f"seed {seed}: {len(wrong)} job(s) not in their deserved state:\n" + "\n".join(wrong[:20])

    starts = Counter((work / "runs").read_text().split())
    counted_total = sum(j.attempts for j in jobs.values())
    reruns = sum(starts.values()) - counted_total
    interrupted = sum(a.status == AttemptStatus.INTERRUPTED for h in attempts.values() for a in h)
    assert all(starts[i] >= jobs[i].attempts for i in jobs), "a counted attempt never started"
    held = WORKERS + claim_ahead_jobs(WORKERS)
    assert 0 <= reruns <= interrupted <= kills * held, (
        f"seed {seed}: {reruns} re-runs, {interrupted} interrupted attempts after {kills} kills, {held} jobs held")
    figures.update({"backend": "postgresql", "seed": seed, "jobs": len(jobs), "kills (SIGKILL)": kills,
                    "workers": WORKERS, "interrupted attempts": interrupted,
                    "re-runs (at most the interrupted attempts)": reruns,
                    "job starts": sum(starts.values()), "lost": 0})
