"""Crash loop over dependencies, queues and cancellation: 60 chains of 5 jobs (each after the previous), 20 fan-ins of
6 jobs into a join, a capped queue, and chains whose head always fails; a real `queuectl run --workers 6` process is
SIGKILLed 20 times at random moments and restarted, some chain heads are cancelled meanwhile; then one engine drains.

Afterwards: every job is in the state its dependencies deserve (a chain whose head failed is cancelled from there on,
naming the head; a cancelled job's dependants are cancelled), every job that ran started only after all it runs
after had completed (start stamps against the dependencies' end stamps), and nothing ran twice except around kills.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Any

import pytest

from queuectl.models import JobState
from tests.engine_helpers import Engines, _processes_of_home, cli, cli_ok, config_set, enqueue_many, jobs
from tests.torture.support import counters_match, engine_logs_clean, integrity

CHAINS, CHAIN_LEN, FANS, FAN_WIDTH, DOOMED = 60, 5, 20, 6, 10
KILLS, WORKERS = 20, 6
SEED = int(os.environ.get("QUEUECTL_TORTURE_SEED", "20261204"))


def _stamped(work: Path, job: str, body: str) -> str:
    """Writes "<job> start <t>" and, if the body succeeds, "<job> end <t>" to work/stamps (O_APPEND)."""
    stamps = work / "stamps"
    return (f'echo "{job} start $(date +%s.%N)" >> {stamps}; {body} && '
            f'echo "{job} end $(date +%s.%N)" >> {stamps}')


def _jobs(work: Path, rng: random.Random) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
    specs: list[dict[str, Any]] = []
    after: dict[str, list[str]] = {}

    def add(job_id: str, body: str, deps: list[str], **extra: Any) -> None:
        specs.append({"id": job_id, "command": _stamped(work, job_id, body), "after": deps, **extra})
        after[job_id] = deps

    for c in range(CHAINS):
        for k in range(CHAIN_LEN):
            add(f"c{c}-{k}", f"sleep {rng.choice(['0', '0.05', '0.1'])}", [f"c{c}-{k - 1}"] if k else [],
                queue="capped" if c % 3 == 0 else "default")
    for f in range(FANS):
        parts = [f"f{f}-{k}" for k in range(FAN_WIDTH)]
        for part in parts:
            add(part, "sleep 0.05", [])
        add(f"f{f}-join", "true", parts)
    for d in range(DOOMED):
        add(f"d{d}-0", "exit 3", [])
        add(f"d{d}-1", "true", [f"d{d}-0"])
        add(f"d{d}-2", "true", [f"d{d}-1"])
    return specs, after


def _stamps(path: Path) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    starts: dict[str, list[float]] = {}
    ends: dict[str, list[float]] = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        job_id, what, at = line.split()
        (starts if what == "start" else ends).setdefault(job_id, []).append(float(at))
    return starts, ends


def _check(found: dict[str, Any], after: dict[str, list[str]], starts: dict[str, list[float]],
           ends: dict[str, list[float]], cancelled_heads: list[str]) -> list[str]:
    """What is wrong: a job in a state its dependencies do not explain, or one that started before a dependency
    ended."""
    wrong: list[str] = []
    for job_id, deps in after.items():
        job = found[job_id]
        chain = job_id.split("-")[0]
        if job_id.startswith("d"):
            expected = JobState.DEAD if job_id.endswith("-0") else JobState.CANCELLED
        elif f"{chain}-0" in found and found[f"{chain}-0"].state == JobState.CANCELLED:
            expected = JobState.CANCELLED  # the head and everything after it
            if f"{chain}-0" not in cancelled_heads:
                wrong.append(f"{job_id}: its chain head was cancelled without being asked to")
        else:
            expected = JobState.COMPLETED
        if job.state != expected:
            wrong.append(f"{job_id}: {job.state.value}, expected {expected.value} ({job.last_error})")
        if job_id in starts:  # it ran: after the end of every dependency
            first_start = min(starts[job_id])
            for dep in deps:
                if not ends.get(dep) or first_start < max(ends[dep]) - 0.001:
                    wrong.append(f"{job_id} started at {first_start:.3f}, before {dep} ended ({ends.get(dep)})")
    return wrong


@pytest.mark.timeout(300)
def test_dependencies_survive_a_crash_loop_and_run_only_after_what_they_wait_for(
    home: Path, tmp_path: Path, figures: dict[str, Any]
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    rng = random.Random(SEED)
    specs, after = _jobs(work, rng)
    for key, value in (("max-retries", "0"), ("kill-grace", "0.2s")):
        config_set(home, key, value)
    cli_ok(home, "queue", "add", "capped", "--concurrency", "2")
    enqueue_many(home, specs, cwd=work)
    cancelled_heads = [f"c{c}-0" for c in rng.sample(range(1, CHAINS, 3), 5)]  # not in the capped queue

    cli_ok(home, "cancel", *cancelled_heads[:3])  # before any engine: these chains never run
    with Engines(home, tmp_path) as engines:
        for n in range(KILLS):
            engine = engines.start(workers=WORKERS)
            if n == 0:  # the others while engines run: a head that wins the race completes
                for head in cancelled_heads[3:]:
                    refused = cli(home, "cancel", head)
                    assert refused.returncode == 0 or "is completed" in refused.stderr, refused.stderr
            time.sleep(rng.uniform(0.05, 0.6))  # the random moment of the kill: the scenario itself
            engine.kill9()
        drain = cli(home, "run", "--workers", str(WORKERS), "--until-idle", timeout=200)
        assert drain.returncode == 0, drain.stderr[-3000:]
        bad_lines = engine_logs_clean(engines.started)
    found = jobs(home)
    starts, ends = _stamps(work / "stamps")

    cancelled = {i for i in found if found[i].state == JobState.CANCELLED}
    wrong = _check(found, after, starts, ends, cancelled_heads)
    doomed_msgs = [found[f"d{d}-2"].last_error or "" for d in range(DOOMED)]
    ran_twice = sum(len(v) - 1 for v in starts.values())
    figures.update({"jobs": len(specs), "kills (SIGKILL)": KILLS, "seed": SEED, "jobs in a wrong state": len(wrong),
                    "cancelled": len(cancelled), "starts beyond one per job": ran_twice,
                    "tracebacks / internal errors": len(bad_lines)})
    assert set(found) == set(after), "jobs lost or invented"
    assert not wrong, f"seed {SEED}: " + "\n".join(wrong[:20])
    assert all(f"d{d}-0" in m for d, m in enumerate(doomed_msgs)), doomed_msgs
    assert len(cancelled) >= DOOMED * 2 + 3 * CHAIN_LEN
    assert ran_twice <= KILLS * WORKERS
    assert not bad_lines, "\n".join(bad_lines[:20])
    assert not _processes_of_home(home)
    assert integrity(home / "queue.db") == "ok"
    assert counters_match(home / "queue.db")
