"""Power scheduling on PostgreSQL, end to end: real `queuectl run` processes on a fresh schema of the server of
tests/pg.py, real jobs, the CLI as other processes. Each engine and the CLI have a data directory of their own (as
on other hosts), so no wake-up can travel by the Unix-socket datagrams: cancel, resume and the rest reach the
engines through LISTEN/NOTIFY (cancel and resume are timed to tell it from the engines' 1 s change poll). The same
features on SQLite: tests/test_sched_engine.py and tests/test_sched_cli.py. Every wait polls under a deadline.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from queuectl.models import AttemptStatus, JobState
from tests import test_engine_postgres as on_pg
from tests.engine_helpers import cli, read_pids, wait_for_pids, wait_pids_gone, wait_until
from tests.test_engine_postgres import (
    Pg,
    blocking,
    enqueue,
    enqueue_many,
    lines,
    other_engines,
    qcli,
    start,
)
from tests.test_sched_engine import max_overlap, spans, stamp

# test_engine_postgres's fixtures, by name: a fresh schema per test (or a visible skip), and no stray jobs after it.
base_url, pg, _no_stray_jobs = on_pg.base_url, on_pg.pg, on_pg._no_stray_jobs

COMPLETED, CANCELLED, DEAD, PENDING, WAITING, PROCESSING = (
    JobState.COMPLETED, JobState.CANCELLED, JobState.DEAD, JobState.PENDING, JobState.WAITING, JobState.PROCESSING)


def refused(home: Path, pg: Pg, *args: str, code: int = 1) -> str:
    """`queuectl ARGS` must fail with `code`, one error line on stderr and nothing on stdout; returns that line."""
    proc = cli(home, *args, env=pg.env, timeout=30)
    assert (proc.returncode, proc.stdout) == (code, ""), (proc.returncode, proc.stdout, proc.stderr)
    (line,) = proc.stderr.splitlines()
    assert line.startswith("queuectl: error: "), line
    return line


# ---- cancel ---------------------------------------------------------------------------------------------------------


def test_cancel_from_another_home_kills_the_running_tree_and_does_not_retry(
        home: Path, work: Path, tmp_path: Path, pg: Pg) -> None:
    with other_engines(tmp_path, "host-a") as a:
        engine = start(a, pg, workers=2)
        job_id = enqueue(home, pg, f"sh -c 'sleep 300 & echo $! >> {work}/pids; sleep 300 & echo $! >> {work}/pids; "
                                   "wait'", cwd=work, id="tree", max_retries=5)
        pids = wait_for_pids(work / "pids", 2)
        started = time.monotonic()
        assert "tree cancelling" in qcli(home, pg, "cancel", job_id)
        returned = time.time()
        pg.wait_states({job_id: CANCELLED}, timeout=10)
        took = time.monotonic() - started
        wait_pids_gone(pids)
        assert took < 3, f"cancel took {took:.2f}s"
        cancelled = pg.job(job_id)
        assert (cancelled.attempts, cancelled.runs) == (1, 1)  # not retried
        (attempt,) = pg.attempts(job_id)
        assert attempt.status == AttemptStatus.CANCELLED and attempt.finished_at is not None
        # NOTIFY at the cancel's commit: done within ms (the 1 s change poll alone would miss this half the time)
        assert attempt.finished_at - returned < 0.5, f"ended {attempt.finished_at - returned:.3f}s after the cancel"
        assert engine.wait_log(r"tree cancelled: its process group was terminated", timeout=5)
        # the engine goes on: a job enqueued after the cancel runs (and "tree" stays cancelled)
        enqueue(home, pg, f"touch {work}/next", cwd=work, id="next")
        assert pg.wait_states({"next": COMPLETED}, timeout=10)["tree"].state == CANCELLED
        assert read_pids(work / "pids") == pids  # no second run wrote its pids
        assert engine.returncode is None


# ---- pause and resume -----------------------------------------------------------------------------------------------


def test_a_paused_queue_starts_nothing_and_resume_from_another_home_runs_it_promptly(
        home: Path, work: Path, tmp_path: Path, pg: Pg) -> None:
    assert qcli(home, pg, "pause") == "paused: default\n"
    enqueue(home, pg, f"touch {work}/held", cwd=work, id="held")
    # an until-idle engine of another home finds nothing it may start and exits
    proc = cli(tmp_path / "idle", "run", "--until-idle", env=pg.env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    with other_engines(tmp_path, "host-a") as a:
        engine = start(a, pg, workers=2)
        enqueue(home, pg, f"touch {work}/side", cwd=work, id="side", queue="side")
        found = pg.wait_states({"side": COMPLETED}, timeout=10)  # the engine claims: not the paused queue's job
        assert (found["held"].state, found["held"].runs) == (PENDING, 0)
        assert "default (paused)" in qcli(home, pg, "status")
        started = time.monotonic()
        assert "resumed: default" in qcli(tmp_path / "elsewhere", pg, "resume")
        returned = time.time()
        held = pg.wait_states({"held": COMPLETED}, timeout=10)["held"]
        assert time.monotonic() - started < 5
        assert held.started_at is not None and held.started_at - returned < 0.5  # woken by NOTIFY, not the poll
        assert (work / "held").exists() and engine.returncode is None


# ---- queue concurrency ----------------------------------------------------------------------------------------------


def test_queue_concurrency_holds_across_two_engines_of_separate_homes(
        home: Path, work: Path, tmp_path: Path, pg: Pg) -> None:
    ids = enqueue_many(home, pg, ({"id": f"g{n}", "command": stamp(work / "spans", 0.3), "queue": "gpu"}
                                  for n in range(6)), cwd=work)
    qcli(home, pg, "queue", "set", "gpu", "--concurrency", "2")
    with other_engines(tmp_path, "host-a") as a, other_engines(tmp_path, "host-b") as b:
        start(a, pg, workers=3)
        start(b, pg, workers=3)
        pg.wait_states(dict.fromkeys(ids, COMPLETED), timeout=30)
    ran = spans(work / "spans")
    assert len(ran) == 6
    assert max_overlap(ran) == 2, f"spans {ran}"  # the cap, and the cap used
    assert all(j.runs == 1 for j in pg.jobs().values())
    (gpu,) = [q for q in json.loads(qcli(home, pg, "queue", "list", "--json")) if q["name"] == "gpu"]
    assert (gpu["concurrency"], gpu["running"], gpu["runnable"]) == (2, 0, 0)


# ---- dependencies ---------------------------------------------------------------------------------------------------


def test_a_chain_runs_in_order_across_two_engines_and_a_dead_dependency_cancels_then_revives_its_dependants(
        home: Path, work: Path, tmp_path: Path, pg: Pg) -> None:
    qcli(home, pg, "config", "set", "max-retries", "0")
    enqueue_many(home, pg, [{"id": "a", "command": stamp(work / "a", 0.2)},
                            {"id": "b", "command": stamp(work / "b", 0.1), "after": ["a"]},
                            {"id": "c", "command": stamp(work / "c", 0.0), "after": ["b"]},
                            {"id": "fetch", "command": f"test -e {work}/ready"},
                            {"id": "build", "command": "true", "after": ["fetch"]},
                            {"id": "ship", "command": "true", "after": ["build"]}], cwd=work)
    assert {i: j.state for i, j in pg.jobs().items()} == {
        "a": PENDING, "b": WAITING, "c": WAITING, "fetch": PENDING, "build": WAITING, "ship": WAITING}
    with other_engines(tmp_path, "host-a") as one, other_engines(tmp_path, "host-b") as two:
        start(one, pg, workers=2)
        start(two, pg, workers=2)
        found = pg.wait_states({"c": COMPLETED, "fetch": DEAD, "build": CANCELLED, "ship": CANCELLED}, timeout=20)
        (a_span,), (b_span,), (c_span,) = spans(work / "a"), spans(work / "b"), spans(work / "c")
        assert a_span[1] <= b_span[0] and b_span[1] <= c_span[0]
        build, ship = found["build"], found["ship"]
        assert build.last_error is not None and "fetch" in build.last_error and "dead" in build.last_error
        assert ship.last_error is not None and "fetch" in ship.last_error and "build" in ship.last_error
        assert build.runs == ship.runs == 0
        (work / "ready").touch()
        qcli(tmp_path / "elsewhere", pg, "dlq", "retry", "fetch")
        found = pg.wait_states(dict.fromkeys(("fetch", "build", "ship"), COMPLETED), timeout=20)
        assert [found[i].runs for i in ("fetch", "build", "ship")] == [2, 1, 1]


# ---- cron -----------------------------------------------------------------------------------------------------------


def test_cron_on_two_engines_of_separate_homes_enqueues_each_due_second_once(
        home: Path, work: Path, tmp_path: Path, pg: Pg) -> None:
    ticks = work / "ticks"
    with other_engines(tmp_path, "host-a") as a, other_engines(tmp_path, "host-b") as b:
        start(a, pg, workers=2)
        start(b, pg, workers=2)
        qcli(home, pg, "cron", "add", "tick", "* * * * * *", "--", f"echo $QUEUECTL_JOB_ID >> {ticks}")
        wait_until(lambda: len(lines(ticks)) >= 4, timeout=15, what="4 cron runs")
        qcli(home, pg, "cron", "pause", "tick")
        made = {i: j for i, j in pg.jobs().items() if j.cron == "tick"}
        pg.wait_states(dict.fromkeys(made, COMPLETED), timeout=10)  # those enqueued before the pause
    ran = lines(ticks)
    assert len(ran) == len(set(ran)), f"a due time ran twice: {ran}"
    assert sorted(ran) == sorted(made)  # each job once, and no job the pause let through
    seconds = [i.split("@")[1] for i in made]
    assert len(made) >= 4 and len(seconds) == len(set(seconds))
    assert all(i.startswith("tick@") for i in made)
    listed = json.loads(qcli(home, pg, "cron", "list", "--json"))
    assert [(e["name"], e["paused"]) for e in listed] == [("tick", True)]


# ---- unique keys ----------------------------------------------------------------------------------------------------


def test_unique_key_is_refused_naming_its_holder_and_if_exists_ignore_returns_it(
        home: Path, work: Path, tmp_path: Path, pg: Pg) -> None:
    elsewhere = tmp_path / "elsewhere"
    enqueue(home, pg, blocking(work, "holder"), cwd=work, id="holder", unique_key="report")
    assert "job 'holder'" in refused(elsewhere, pg, "enqueue", "--unique-key", "report", "--", "true")  # pending
    with other_engines(tmp_path, "host-a") as a:
        start(a, pg, workers=2)
        pg.wait_states({"holder": PROCESSING}, timeout=10)
        assert "job 'holder'" in refused(elsewhere, pg, "enqueue", "--unique-key", "report", "--", "true")
        again = qcli(elsewhere, pg, "enqueue", "--unique-key", "report", "--if-exists", "ignore", "--", "true")
        assert again == "holder\n"
        assert set(pg.jobs()) == {"holder"}
        (work / "holder.go").touch()
        pg.wait_states({"holder": COMPLETED}, timeout=10)
        assert enqueue(elsewhere, pg, "true", cwd=work, id="next", unique_key="report") == "next"  # free again
        pg.wait_states({"next": COMPLETED}, timeout=10)


# ---- wait -----------------------------------------------------------------------------------------------------------


def test_wait_exit_codes_completed_dead_and_timeout(home: Path, work: Path, tmp_path: Path, pg: Pg) -> None:
    qcli(home, pg, "config", "set", "max-retries", "0")
    with other_engines(tmp_path, "host-a") as a:
        start(a, pg, workers=4)
        enqueue(home, pg, "sleep 0.2", cwd=work, id="good")
        enqueue(home, pg, "exit 4", cwd=work, id="bad")
        enqueue(home, pg, "sleep 30", cwd=work, id="slow")
        good = cli(home, "wait", "good", env=pg.env, timeout=30)
        assert (good.returncode, good.stdout) == (0, "good completed\n"), good.stderr
        both = cli(tmp_path / "elsewhere", "wait", "good", "bad", env=pg.env, timeout=30)
        assert (both.returncode, both.stdout) == (1, "good completed\nbad dead\n"), both.stderr
        pg.wait_states({"slow": PROCESSING}, timeout=10)
        started = time.monotonic()
        slow = cli(home, "wait", "slow", "--timeout", "0.5", env=pg.env, timeout=30)
        assert slow.returncode == 124 and "timed out" in slow.stderr and len(slow.stderr.splitlines()) == 1
        assert time.monotonic() - started < 5
        qcli(home, pg, "cancel", "slow")
        cancelled = cli(home, "wait", "slow", "--quiet", env=pg.env, timeout=30)
        assert (cancelled.returncode, cancelled.stdout) == (1, ""), cancelled.stderr
        assert pg.job("slow").state == CANCELLED
