"""Open files: every running job holds a few (its output pipe, its pidfd, its log file). An engine started with more
workers than its open-files limit allows must not fail jobs with "Too many open files": it raises its soft limit
where the hard one allows, and refuses to start (one line, exit 2) where it does not. A shortage that comes later
(files taken by something else in the engine's process) gives the job back without spending its attempt."""

from __future__ import annotations

import json
import resource
import subprocess
from collections.abc import Callable
from pathlib import Path

from queuectl import fdlimit, jobspec
from queuectl.models import AttemptStatus, JobState
from tests.engine_helpers import await_states, await_until, engine_in_process
from tests.helpers import out_of_files, proc_argv, proc_env, run_proc

WORKERS = 60
#: Well under what WORKERS running jobs hold (three files each) plus the engine's own.
LOW_LIMIT = 64


def _limit_open_files(soft: int, hard: int) -> Callable[[], None]:
    def apply() -> None:  # in the child, before exec: the engine starts under these limits
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return apply


def _run(home: Path, soft: int, hard: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(proc_argv(*args), check=False, capture_output=True, text=True, env=proc_env(home),
                          timeout=120, preexec_fn=_limit_open_files(soft, hard))


def _enqueue_printing_sleepers(home: Path, n: int) -> None:
    # Each prints (a log file) and sleeps, so that all WORKERS run at once and hold their files together.
    lines = "".join(json.dumps({"id": f"j{i}", "command": "echo out; sleep 0.5"}) + "\n" for i in range(n))
    done = run_proc("enqueue", "--file", "-", home=home, input=lines)
    assert done.code == 0, done.err


def _states(home: Path) -> dict[str, int]:
    done = run_proc("list", "--json", "--limit", "1000", home=home)
    assert done.code == 0, done.err
    states: dict[str, int] = {}
    for job in json.loads(done.out):
        states[job["state"]] = states.get(job["state"], 0) + 1
    return states


def test_engine_raises_a_low_soft_limit_so_that_no_job_fails_for_want_of_files(tmp_path: Path) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert hard == resource.RLIM_INFINITY or hard >= 1024, "this machine's hard limit is too low for this test"
    _enqueue_printing_sleepers(tmp_path, WORKERS)
    done = _run(tmp_path, LOW_LIMIT, hard, "run", "--workers", str(WORKERS), "--until-idle")
    assert done.returncode == 0, done.stderr
    assert "Too many open files" not in done.stderr
    assert _states(tmp_path) == {"completed": WORKERS}


def test_engine_refuses_more_workers_than_its_hard_limit_allows(tmp_path: Path) -> None:
    _enqueue_printing_sleepers(tmp_path, 3)
    done = _run(tmp_path, LOW_LIMIT, LOW_LIMIT, "run", "--workers", str(WORKERS), "--until-idle")
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"queuectl: error: --workers {WORKERS} needs ")
    assert "ulimit -n" in lines[0] and f"{LOW_LIMIT}" in lines[0]
    assert _states(tmp_path) == {"pending": 3}  # nothing claimed, nothing spent
    fits = _run(tmp_path, LOW_LIMIT, LOW_LIMIT, "run", "--workers", "2", "--until-idle")
    assert fits.returncode == 0, fits.stderr
    assert _states(tmp_path) == {"completed": 3}


def test_the_refusal_counts_the_workers_that_fit_under_the_hard_limit(tmp_path: Path) -> None:
    """Fewer workers get the soft limit raised as far as the hard one: the advice counts from there."""
    _enqueue_printing_sleepers(tmp_path, 3)
    hard = 120
    fit = (hard - fdlimit.ENGINE_FILES) // fdlimit.FILES_PER_WORKER
    done = _run(tmp_path, LOW_LIMIT, hard, "run", "--workers", str(WORKERS), "--until-idle")
    assert done.returncode == 2
    assert done.stderr.strip().endswith(f"raise the limit, or run at most {fit} workers"), done.stderr
    fits = _run(tmp_path, LOW_LIMIT, hard, "run", "--workers", str(fit), "--until-idle")
    assert fits.returncode == 0, fits.stderr
    assert _states(tmp_path) == {"completed": 3}


def test_a_limit_too_low_for_one_worker_says_how_many_files_one_needs(tmp_path: Path) -> None:
    one = fdlimit.files_needed(1)
    done = _run(tmp_path, one - 4, one - 4, "run", "--workers", "1", "--until-idle")
    assert done.returncode == 2
    assert done.stderr.strip().endswith(f"raise the limit to at least {one}, what one worker needs"), done.stderr


async def test_a_command_that_cannot_start_for_want_of_files_does_not_spend_its_attempt(tmp_path: Path) -> None:
    """No retries left (max_retries 0): before, the job went dead with "cannot start: Too many open files"."""
    # The engine wakes at least every 0.2 s: the wake-up datagram of an enqueue needs a file, and none is left.
    async with engine_in_process(tmp_path, workers=1, shortage_pause_s=0.2, max_sleep_s=0.2) as (_engine, q, log):
        with out_of_files():
            # Claimed (the database is open already), and cannot start.
            await q.enqueue([jobspec.from_mapping({"id": "j1", "command": "echo ran", "max_retries": 0,
                                                   "cwd": str(tmp_path)})])
            await await_until(lambda: q.store.attempts("j1"), timeout=20, what="an attempt to start j1")
        found = await await_states(q, {"j1": [JobState.COMPLETED, JobState.DEAD]}, timeout=20)
        history = await q.store.attempts("j1")
    assert (found["j1"].state, found["j1"].attempts) == (JobState.COMPLETED, 1)
    *given_back, ran = history
    assert given_back and all(a.status == AttemptStatus.INTERRUPTED for a in given_back)
    assert "Too many open files" in (given_back[0].error or "")
    assert (ran.status, ran.exit_code, (ran.output_tail or "").strip()) == (AttemptStatus.SUCCEEDED, 0, "ran")
    assert "j1 could not start: Too many open files; given back without counting the attempt" in log.getvalue()


def test_commands_that_leave_processes_holding_their_output_do_not_spend_the_next_jobs_retries(
    tmp_path: Path,
) -> None:
    """Each `sleep 4 &` leaves a process holding its output pipe, and the engine copies what it writes until it exits:
    an open file each. Under a limit of 40, the engine runs out of files after some 25 such jobs; the jobs it cannot
    start then wait (given back, claiming paused) instead of failing, and `--until-idle` waits for them."""
    jobs = 40
    lines = "".join(json.dumps({"id": f"d{i}", "command": "sleep 4 &", "max_retries": 0}) + "\n" for i in range(jobs))
    done = run_proc("enqueue", "--file", "-", home=tmp_path, input=lines)
    assert done.code == 0, done.err
    ran = _run(tmp_path, 40, 40, "run", "--workers", "1", "--until-idle")
    assert ran.returncode == 0, ran.stderr
    assert "could not start: Too many open files; given back without counting the attempt" in ran.stderr
    assert _states(tmp_path) == {"completed": jobs}
