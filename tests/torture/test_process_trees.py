"""Process trees: every job starts a child shell that starts two grandchildren (`sleep 300`), and writes every pid
(its own shell, the child, the grandchildren) to a file. After a timeout, a fast stop (second SIGINT) and a kill -9
followed by a restart, every one of those pids must be gone (a zombie counts as gone: pid 1 here may not reap).
Half the jobs ignore SIGTERM in the child and grandchildren, so that only the SIGKILL after kill-grace ends them."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest

from queuectl.models import AttemptStatus, JobState
from tests.engine_helpers import (
    Engines,
    attempts,
    cli,
    config_set,
    enqueue_many,
    jobs,
    process_gone,
    read_pids,
    wait_for_pids,
    wait_for_states,
    wait_until,
)
from tests.torture.support import engine_logs_clean

JOBS = 8
PIDS_PER_JOB = 4


def _tree(pids: Path, work: Path, *, stubborn: bool) -> str:
    """The job's shell, a child shell, two grandchildren; with stubborn, child and grandchildren ignore SIGTERM.
    Once work/fast exists, a new run of the job exits at once."""
    trap = 'trap "" TERM; ' if stubborn else ""
    inner = f"{trap}sleep 300 & echo $! >> {pids}; sleep 300 & echo $! >> {pids}; wait"
    return (f"echo $$ >> {pids}; if [ -f {work}/fast ]; then exit 0; fi; "
            f"sh -c '{inner}' & echo $! >> {pids}; wait")


def _jobs(prefix: str, pids: Path, work: Path, **extra: Any) -> list[dict[str, Any]]:
    return [{"id": f"{prefix}-{n}", "command": _tree(pids, work, stubborn=n % 2 == 1), **extra} for n in range(JOBS)]


def _alive(pids: list[int]) -> list[int]:
    return [p for p in pids if not process_gone(p)]


@pytest.fixture
def work(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


@pytest.mark.timeout(180)
def test_timeouts_fast_stops_and_kill9_restarts_leave_no_child_or_grandchild(
    home: Path, work: Path, tmp_path: Path, figures: dict[str, Any]
) -> None:
    config_set(home, "kill-grace", "0.5s")
    checked: dict[str, int] = {}
    survivors: dict[str, list[int]] = {}
    with Engines(home, tmp_path) as engines:
        # 1. Timeouts: each job's group gets SIGTERM at 1 s, SIGKILL 0.5 s later.
        pids = work / "timeout.pids"
        engine = engines.start(workers=JOBS)
        enqueue_many(home, _jobs("timeout", pids, work, timeout="1s", max_retries=0), cwd=work)
        seen = wait_for_pids(pids, JOBS * PIDS_PER_JOB, timeout=30)
        assert len(_alive(seen)) == JOBS * PIDS_PER_JOB, "the trees should be running before the timeout"
        found = wait_for_states(home, {f"timeout-{n}": JobState.DEAD for n in range(JOBS)}, timeout=30)
        assert all(found[f"timeout-{n}"].last_error == "timed out after 1s" for n in range(JOBS))
        # The group was SIGKILLed before the result was recorded: nothing may be left even a moment later.
        wait_until(lambda: not _alive(seen), timeout=2, what="every pid of the timed-out trees gone")
        checked["timeout"], survivors["timeout"] = len(seen), _alive(seen)

        # 2. Fast stop: SIGINT (graceful: the jobs go on), SIGINT again (terminate the groups, give the jobs back).
        pids = work / "fast-stop.pids"
        enqueue_many(home, _jobs("fast", pids, work), cwd=work)
        seen = wait_for_pids(pids, JOBS * PIDS_PER_JOB, timeout=30)
        engine.send(signal.SIGINT)
        engine.wait_log(r"stopping: waiting", timeout=10)
        assert len(_alive(seen)) == JOBS * PIDS_PER_JOB, "a graceful stop must not touch running jobs"
        t0 = time.monotonic()
        engine.send(signal.SIGINT)
        assert engine.wait_exit(timeout=30) == 0
        fast_stop_s = round(time.monotonic() - t0, 2)
        wait_until(lambda: not _alive(seen), timeout=2, what="every pid of the fast-stopped trees gone")
        checked["fast stop"], survivors["fast stop"] = len(seen), _alive(seen)
        found = jobs(home)
        assert all(found[f"fast-{n}"].state == JobState.PENDING and found[f"fast-{n}"].attempts == 0
                   for n in range(JOBS))

        # 3. kill -9: the trees outlive their engine (each job leads its own session); the next engine kills them.
        pids = work / "kill9.pids"
        engine = engines.start(workers=JOBS * 2)  # also reruns the fast-stopped jobs: their trees go to the same file
        wait_for_states(home, {f"fast-{n}": JobState.PROCESSING for n in range(JOBS)}, timeout=30)
        enqueue_many(home, _jobs("kill9", pids, work), cwd=work)
        seen = wait_for_pids(pids, JOBS * PIDS_PER_JOB, timeout=30)
        seen += wait_for_pids(work / "fast-stop.pids", 2 * JOBS * PIDS_PER_JOB, timeout=30)[JOBS * PIDS_PER_JOB :]
        engine.kill9()
        assert len(_alive(seen)) == len(seen), "the jobs' trees should outlive a SIGKILLed engine"
        (work / "fast").touch()
        drain = cli(home, "run", "--workers", str(JOBS), "--until-idle", timeout=60)
        assert drain.returncode == 0, drain.stderr[-3000:]
        wait_until(lambda: not _alive(seen), timeout=2, what="every pid left by the killed engine gone")
        checked["kill -9 and restart"], survivors["kill -9 and restart"] = len(seen), _alive(seen)
        bad = engine_logs_clean(engines.started)

    found = jobs(home)
    assert all(j.state == JobState.COMPLETED for i, j in found.items() if not i.startswith("timeout-"))
    assert all([a.status for a in attempts(home, f"timeout-{n}")] == [AttemptStatus.TIMED_OUT] for n in range(JOBS))
    figures.update({"jobs": 3 * JOBS, "pids checked": sum(checked.values()),
                    "pids checked per case": checked, "pids surviving": sum(len(s) for s in survivors.values()),
                    "seconds from 2nd SIGINT to exit": fast_stop_s, "tracebacks": len(bad)})
    assert not bad
    assert read_pids(work / "timeout.pids")
