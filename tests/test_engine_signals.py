"""Real signals to a real engine subprocess: graceful and fast stops, `--grace`, `worker stop`, kill -9 and
recovery (at start, and by another engine while it runs)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from queuectl import jobspec, orphans
from queuectl.api import Queue
from queuectl.models import AttemptStatus, EngineInfo, JobState
from queuectl.procs import host_key
from tests.engine_helpers import (
    QUEUECTL,
    Engines,
    attempts,
    attempts_async,
    await_states,
    await_until,
    cli,
    cli_env,
    cli_ok,
    config_set,
    engine_in_process,
    enqueue,
    enqueue_many,
    job,
    jobs,
    jobs_async,
    kill_processes_of_home,
    process_gone,
    process_state,
    run_until_idle,
    wait_for_pids,
    wait_for_states,
    wait_pids_gone,
    wait_until,
)

COMPLETED, PENDING, PROCESSING = JobState.COMPLETED, JobState.PENDING, JobState.PROCESSING
INTERRUPTED, SUCCEEDED = AttemptStatus.INTERRUPTED, AttemptStatus.SUCCEEDED


def blocking(work: Path, name: str) -> str:
    """A job that runs until the file work/<name>.go exists."""
    return f"touch {work}/{name}.started; while [ ! -f {work}/{name}.go ]; do sleep 0.02; done"


def tree(pids: Path, work: Path) -> str:
    """A job that records its shell's pid and its child's, then waits on a long sleep (unless work/fast exists)."""
    return f"echo $$ >> {pids}; if [ -f {work}/fast ]; then exit 0; fi; sleep 300 & echo $! >> {pids}; wait"


def running_ids(home: Path) -> set[str]:
    return {i for i, j in jobs(home).items() if j.state == PROCESSING}


# ---- graceful stop --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=["SIGTERM", "SIGINT", "SIGHUP"])
def test_graceful_stop_claims_nothing_new_lets_running_jobs_finish_and_exits_0(
    home: Path, work: Path, engines: Engines, sig: signal.Signals
) -> None:
    engine = engines.start(workers=2)
    enqueue(home, blocking(work, "A"), id="A", cwd=work)
    enqueue(home, blocking(work, "B"), id="B", cwd=work)
    wait_for_states(home, {"A": PROCESSING, "B": PROCESSING}, timeout=10)
    enqueue(home, f"touch {work}/C.ran", id="C", cwd=work)  # waits for a free worker
    engine.send(sig)
    engine.wait_log(r"stopping", timeout=10)
    (work / "A.go").touch()
    wait_for_states(home, {"A": COMPLETED}, timeout=10)  # a worker is free now: a running engine would take C
    assert engine.returncode is None, "the engine exited before its running job B finished"
    (work / "B.go").touch()
    assert engine.wait_exit(timeout=15) == 0
    found = jobs(home)
    assert found["B"].state == COMPLETED
    assert found["C"].state == PENDING
    assert found["C"].runs == 0
    assert not (work / "C.ran").exists()
    last = engine.log_lines()[-1]
    assert "engine stopped after" in last
    assert "2 completed" in last


def test_ctrl_c_to_the_engines_process_group_stops_it_gracefully_without_reaching_the_jobs(
    home: Path, work: Path, engines: Engines
) -> None:
    """Ctrl-C in a terminal signals the whole foreground process group: the jobs, each in a session of its own,
    must not get it, and finish normally during the graceful stop."""
    engine = engines.start(workers=1, new_session=True)
    enqueue(home, blocking(work, "J"), id="J", cwd=work)
    wait_for_states(home, {"J": PROCESSING}, timeout=10)
    os.killpg(engine.pid, signal.SIGINT)
    engine.wait_log(r"stopping", timeout=10)
    (work / "J.go").touch()
    assert engine.wait_exit(timeout=15) == 0
    done = job(home, "J")
    assert done.state == COMPLETED, done.last_error
    assert done.exit_code == 0


def test_second_sigint_stops_fast_and_gives_jobs_back_without_spending_an_attempt(
    home: Path, work: Path, engines: Engines
) -> None:
    config_set(home, "kill-grace", "0.5s")
    engine = engines.start(workers=2)
    pids = work / "pids"
    enqueue(home, tree(pids, work), id="F1", cwd=work)
    enqueue(home, tree(pids, work), id="F2", cwd=work)
    wait_for_states(home, {"F1": PROCESSING, "F2": PROCESSING}, timeout=10)
    seen = wait_for_pids(pids, 4)
    engine.send(signal.SIGINT)
    engine.wait_log(r"stopping", timeout=10)
    assert engine.returncode is None  # the first SIGINT waits for the jobs
    t0 = time.monotonic()
    engine.send(signal.SIGINT)
    code = engine.wait_exit(timeout=15)
    assert time.monotonic() - t0 < 5, "a second SIGINT must stop now, not wait for the jobs"
    assert code == 0, engine.log()
    wait_pids_gone(seen, timeout=5)  # every job's process group was terminated
    found = jobs(home)
    for job_id in ("F1", "F2"):
        assert found[job_id].state == PENDING
        assert found[job_id].attempts == 0  # not spent
        assert found[job_id].runs == 1
        (only,) = attempts(home, job_id)
        assert only.status == INTERRUPTED
    assert "2 given back" in engine.log_lines()[-1]
    # ...and they run again, counting only the new attempt
    (work / "fast").touch()
    proc = cli(home, "run", "--workers", "2", "--until-idle", timeout=60)
    assert proc.returncode == 0, proc.stderr
    for job_id in ("F1", "F2"):
        assert job(home, job_id).state == COMPLETED
        assert job(home, job_id).attempts == 1
        assert [a.status for a in attempts(home, job_id)] == [INTERRUPTED, SUCCEEDED]


def test_grace_bounds_a_graceful_stop(home: Path, work: Path, engines: Engines) -> None:
    config_set(home, "kill-grace", "0.5s")
    engine = engines.start("--grace", "1s", workers=1)
    pids = work / "pids"
    enqueue(home, tree(pids, work), id="long", cwd=work)
    wait_for_states(home, {"long": PROCESSING}, timeout=10)
    seen = wait_for_pids(pids, 2)
    t0 = time.monotonic()
    engine.send(signal.SIGTERM)
    assert engine.wait_exit(timeout=15) == 0
    took = time.monotonic() - t0
    assert 0.9 <= took < 6, f"stopped after {took:.2f}s with --grace 1s"
    wait_pids_gone(seen, timeout=5)
    found = job(home, "long")
    assert found.state == PENDING
    assert found.attempts == 0
    assert [a.status for a in attempts(home, "long")] == [INTERRUPTED]


# ---- worker stop ----------------------------------------------------------------------------------------------------


def test_worker_stop_from_another_process_stops_the_engine(home: Path, engines: Engines) -> None:
    engine = engines.start(workers=1)
    out = cli_ok(home, "worker", "stop")
    assert str(engine.engine_id) in out
    assert "asked to stop" in out
    assert engine.wait_exit(timeout=15) == 0
    assert "engine stopped after" in engine.log_lines()[-1]


def test_worker_stop_wait_returns_once_the_engine_has_exited(home: Path, work: Path, engines: Engines) -> None:
    engine = engines.start(workers=1)
    enqueue(home, f"sleep 1; echo done > {work}/done", id="finishing", cwd=work)
    wait_for_states(home, {"finishing": PROCESSING}, timeout=10)
    proc = cli(home, "worker", "stop", "--wait", timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "stopped" in proc.stdout
    # the running job finished before the engine stopped, and the engine is gone (or leaving this instant)
    assert job(home, "finishing").state == COMPLETED
    assert (work / "done").read_text() == "done\n"
    assert engine.wait_exit(timeout=2) == 0
    assert json.loads(cli_ok(home, "status", "--json"))["engines"] == []


async def test_stop_flag_in_the_store_stops_an_engine_at_its_next_heartbeat(home: Path, work: Path) -> None:
    """How `worker stop` reaches an engine on another host: a flag in the store, seen at the next heartbeat."""
    go = work / "go"
    async with engine_in_process(home, workers=1, heartbeat_interval_s=0.2) as (engine, q, log):
        await q.enqueue([jobspec.from_mapping({"id": "hb", "command": f"while [ ! -f {go} ]; do sleep 0.02; done",
                                               "cwd": str(work)})])
        await await_states(q, {"hb": PROCESSING}, timeout=10)
        await q.store.request_stop([engine.id])
        await await_until(lambda: "stop requested by `queuectl worker stop`" in log.getvalue(), timeout=10,
                          what="the engine to see the stop flag")
        await q.enqueue([jobspec.from_mapping({"id": "after", "command": "true", "cwd": str(work)})])
        go.touch()
        await await_states(q, {"hb": COMPLETED}, timeout=10)
    assert (await jobs_async(home))["after"].state == PENDING  # claimed nothing once stopping


@pytest.mark.parametrize("extra", [[], ["--wait"]])
def test_worker_stop_without_an_engine_says_so_and_exits_0(home: Path, extra: list[str]) -> None:
    proc = cli(home, "worker", "stop", *extra, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "no engine is running"
    assert proc.stderr == ""


def test_worker_stop_after_the_engine_was_killed_says_no_engine_is_running(home: Path, engines: Engines) -> None:
    """A kill -9'd engine leaves its row behind; `worker stop` must not report (or signal) a dead pid."""
    engine = engines.start(workers=1)
    engine.kill9()
    proc = cli(home, "worker", "stop", timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "no engine is running"


def test_status_does_not_show_a_killed_engine_as_alive(home: Path, engines: Engines) -> None:
    engine = engines.start(workers=1)
    engine.kill9()
    shown = json.loads(cli_ok(home, "status", "--json"))["engines"]
    assert [e["id"] for e in shown] == [], f"status lists the killed engine {engine.engine_id} as running"


# ---- crash recovery -------------------------------------------------------------------------------------------------


def test_kill9_then_restart_loses_nothing_and_reruns_only_the_interrupted_jobs(
    home: Path, work: Path, engines: Engines
) -> None:
    runs = work / "runs"
    release = work / "release"
    command = f"echo $QUEUECTL_JOB_ID >> {runs}; while [ ! -f {release} ]; do sleep 0.02; done"
    ids = enqueue_many(home, ({"id": f"k{n}", "command": command} for n in range(6)), cwd=work)
    engine = engines.start(workers=2)
    interrupted = wait_until(lambda: running_ids(home) if len(running_ids(home)) == 2 else None, timeout=10,
                             what="2 jobs running")
    wait_until(lambda: (runs.exists() and len(runs.read_text().split()) == 2) or None, timeout=10,
               what="2 runs recorded")
    engine.kill9()
    release.touch()
    proc = cli(home, "run", "--workers", "2", "--until-idle", timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "recovered 2 job(s)" in proc.stderr
    found = jobs(home)
    assert {i: j.state for i, j in found.items()} == dict.fromkeys(ids, COMPLETED)
    ran = runs.read_text().split()
    for job_id in ids:
        expected = 2 if job_id in interrupted else 1  # at-least-once: only the jobs running at the kill rerun
        assert ran.count(job_id) == expected, f"{job_id} ran {ran.count(job_id)} times"
        assert found[job_id].attempts == 1  # the interrupted attempt is not counted
        statuses = [a.status for a in attempts(home, job_id)]
        assert statuses == ([INTERRUPTED, SUCCEEDED] if job_id in interrupted else [SUCCEEDED])


def test_restart_after_kill9_kills_the_dead_engines_leftover_job_processes(
    home: Path, work: Path, engines: Engines
) -> None:
    pids = work / "pids"
    engine = engines.start(workers=1)
    enqueue(home, tree(pids, work), id="orphaned", cwd=work)
    first = wait_for_pids(pids, 2)
    engine.kill9()
    assert not any(process_gone(p) for p in first)  # the job's own session outlives its engine
    (work / "fast").touch()
    proc = cli(home, "run", "--until-idle", timeout=60)
    assert proc.returncode == 0, proc.stderr
    wait_pids_gone(first, timeout=5)
    assert job(home, "orphaned").state == COMPLETED


def test_restart_after_kill9_kills_a_dead_engines_job_shell_that_started_nothing(
    home: Path, work: Path, engines: Engines
) -> None:
    """The job's variables, the engine's id among them, are exported by its shell (see exports): only what the shell
    starts has them in its environment. A shell running builtins alone is still found, by its command line."""
    pids, fifo = work / "pids", work / "fifo"
    os.mkfifo(fifo)
    engine = engines.start(workers=1)
    # `read` is the shell's own: it blocks opening the FIFO, with no child process at all.
    enqueue(home, f"if [ -f {work}/fast ]; then exit 0; fi; echo $$ >> {pids}; read line < {fifo}", id="builtin",
            cwd=work)
    (shell,) = wait_for_pids(pids, 1)
    assert Path(f"/proc/{shell}/task/{shell}/children").read_text() == ""  # nothing started: its environment only
    engine.kill9()
    assert not process_gone(shell)
    (work / "fast").touch()
    proc = cli(home, "run", "--until-idle", timeout=60)
    assert proc.returncode == 0, proc.stderr
    wait_pids_gone([shell], timeout=5)
    assert job(home, "builtin").state == COMPLETED


_UNSHARE = ["unshare", "--fork", "--kill-child", "--pid", "--mount-proc"]


def _unshare_permitted(*namespaces: str) -> bool:
    try:
        done = subprocess.run(["unshare", *namespaces, "true"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


#: The container tests' engines run in a pid namespace of their own (checked once, when the module loads).
_needs_pid_namespace = pytest.mark.skipif(not _unshare_permitted(*_UNSHARE[1:]),
                                          reason="needs `unshare --pid` (root or user namespaces)")


@pytest.mark.skipif(not _unshare_permitted("--uts"), reason="needs `unshare --uts` (root or user namespaces)")
def test_an_engine_started_from_a_dead_engines_job_does_not_kill_itself(home: Path, work: Path) -> None:
    """A job's environment carries its engine's id, and so does whatever it starts: a `queuectl run` started from
    a job of an engine now gone found its own process group among that engine's leftovers, and SIGKILLed it.
    (The engine runs under a host name of its own: to any other engine on this machine, a test's meanwhile, it is
    a leftover of a dead engine of this host, and would be killed as one.)"""
    gone = subprocess.Popen(["true"])  # a pid that no longer runs
    gone.wait()
    env = cli_env(home, {orphans.ENGINE_ENV: orphans.engine_id("qc-own-host", gone.pid, "gone")})
    enqueue(home, "echo ran", id="j1", cwd=work)
    # Its own session: the group it would kill is its own alone.
    proc = subprocess.run(["unshare", "--uts", "sh", "-c", 'hostname qc-own-host && exec "$@"', "sh", *QUEUECTL, "run",
                           "--until-idle"], env=env, capture_output=True, text=True, timeout=60, check=False,
                          start_new_session=True)
    assert proc.returncode == 0, (proc.returncode, proc.stderr)
    assert job(home, "j1").state == COMPLETED


def test_running_engine_recovers_a_dead_engines_jobs_within_the_recover_interval(
    home: Path, work: Path, engines: Engines
) -> None:
    doomed = engines.start(workers=2)
    enqueue(home, f"echo $QUEUECTL_JOB_ID >> {work}/runs; " + blocking(work, "r"), id="r0", cwd=work)
    enqueue(home, f"echo $QUEUECTL_JOB_ID >> {work}/runs; " + blocking(work, "r"), id="r1", cwd=work)
    wait_for_states(home, {"r0": PROCESSING, "r1": PROCESSING}, timeout=10)
    survivor = engines.start(workers=2)  # default settings: recovery sweep every 10 s
    found = jobs(home)
    assert {found["r0"].engine_id, found["r1"].engine_id} == {doomed.engine_id}  # not taken from a live engine
    t0 = time.monotonic()
    doomed.kill9()
    (work / "r.go").touch()
    wait_for_states(home, {"r0": COMPLETED, "r1": COMPLETED}, timeout=30)
    took = time.monotonic() - t0
    assert took < 15, f"recovered {took:.1f}s after the kill"
    survivor.wait_log(r"recovered 2 job\(s\)", timeout=10)  # the log is written by a thread, up to 20 ms later
    assert sorted((work / "runs").read_text().split()) == ["r0", "r0", "r1", "r1"]
    for job_id in ("r0", "r1"):
        assert [a.status for a in attempts(home, job_id)] == [INTERRUPTED, SUCCEEDED]
        assert job(home, job_id).attempts == 1
        assert attempts(home, job_id)[1].engine_id == survivor.engine_id
    assert survivor.returncode is None


async def _claim_for_fake_engine(home: Path, work: Path, *, heartbeat_age_s: float) -> str:
    """A job claimed by an engine registered from another host, whose heartbeat is heartbeat_age_s old."""
    now = time.time()
    fake = EngineInfo(id="elsewhere-4242-beef", host="another-host.example", pid=4242, workers=1,
                      started_at=now - heartbeat_age_s, heartbeat_at=now - heartbeat_age_s)
    async with Queue(home) as q:
        await q.enqueue([jobspec.from_mapping({"id": "remote", "command": "true", "cwd": str(work)})])
        await q.store.register_engine(fake)
        (claim,) = await q.store.claim_due(fake.id, now=time.time(), limit=1)
        assert claim.job.id == "remote"
    return fake.id


async def test_jobs_of_an_engine_with_a_stale_heartbeat_are_recovered_at_start(home: Path, work: Path) -> None:
    await _claim_for_fake_engine(home, work, heartbeat_age_s=120)
    summary, log = await run_until_idle(home, timeout=20)
    assert summary.recovered == 1
    assert "recovered 1 job(s)" in log
    found = (await jobs_async(home))["remote"]
    assert found.state == COMPLETED
    assert found.attempts == 1
    history = await attempts_async(home, "remote")
    assert [a.status for a in history] == [INTERRUPTED, SUCCEEDED]
    assert "interrupted" in (history[0].error or "")


async def test_jobs_of_a_live_engine_on_another_host_are_left_alone(home: Path, work: Path) -> None:
    fake_id = await _claim_for_fake_engine(home, work, heartbeat_age_s=0)
    summary, _log = await run_until_idle(home, timeout=20)
    assert summary.recovered == 0
    found = (await jobs_async(home))["remote"]
    assert found.state == PROCESSING
    assert found.engine_id == fake_id


@_needs_pid_namespace
def test_an_engine_in_its_own_pid_namespace_is_not_judged_by_its_pid_from_outside(
    home: Path, work: Path, engines: Engines
) -> None:
    """A container that shares the host's name (host networking, several replicas with one `hostname:`) numbers its
    processes itself. Before, an engine outside took such an engine's pid (2 here) for one of its own: `worker stop`
    sent SIGTERM to that pid on the host, and a pid not alive here made its running jobs look abandoned."""
    inside = engines.start(workers=1, launcher=_UNSHARE)
    inside_id = inside.wait_started()
    enqueue(home, f"touch {work}/started; while [ ! -f {work}/go ]; do sleep 0.05; done", id="held", cwd=work)
    wait_until(lambda: (work / "started").exists() or None, timeout=20, what="the job to start inside")
    [row] = [e for e in asyncio.run(_engines(home)) if e.id == inside_id]
    assert row.pid == 2  # the pid it has in its own namespace (1 is the init it left behind, see pid1.py)
    assert row.host != host_key() and row.host.startswith(f"{socket.gethostname()}~pidns"), row.host
    # `worker stop` outside reaches it through the store, at its next heartbeat, not by a signal to "pid 2".
    stop = cli(home, "worker", "stop")
    assert stop.returncode == 0 and f"{inside_id} (pid 2 on {row.host}) asked to stop" in stop.stdout, stop

    async def outside_until_idle() -> Any:
        # An engine outside, started while that job runs: it must not recover it (its pid means nothing here),
        # and --until-idle waits for it (its engine may be dead, for all this one can tell), until it ends.
        outside = asyncio.create_task(run_until_idle(home, timeout=30))
        await await_until(lambda: (home / "wake").exists() and len(list((home / "wake").iterdir())) == 2,
                          timeout=10, what="the outside engine to start")
        (work / "go").touch()
        return await outside

    summary, _log = asyncio.run(outside_until_idle())
    assert summary.recovered == 0
    assert inside.wait_exit(timeout=30) == 0, inside.log()
    done = job(home, "held")
    assert (done.state, done.runs) == (COMPLETED, 1)


@_needs_pid_namespace
def test_as_a_containers_first_process_the_engine_leaves_an_init_that_reaps_and_passes_signals_on(
    home: Path, work: Path, engines: Engines
) -> None:
    """`CMD ["queuectl", "run"]`: processes a job left behind are handed to pid 1 when they end their parent. Before,
    pid 1 was the engine, which reaps only its own commands: each became a zombie for the container's life."""
    inside = engines.start(workers=2, launcher=_UNSHARE)
    inside.wait_started()
    init = int(Path(f"/proc/{inside.pid}/task/{inside.pid}/children").read_text().split()[0])
    for n in range(3):  # each leaves a process that ends 0.2 s after its job: handed to pid 1, then ended
        enqueue(home, f"sh -c 'sleep 0.2; echo left >> {work}/left' & true", id=f"leaves{n}", cwd=work)
    wait_for_states(home, {f"leaves{n}": COMPLETED for n in range(3)}, timeout=20)
    wait_until(lambda: len((work / "left").read_text().split()) == 3 if (work / "left").exists() else None,
               timeout=20, what="the processes left behind to end")

    def zombies_of_pid1() -> list[int]:
        children = Path(f"/proc/{init}/task/{init}/children").read_text().split()
        return [int(c) for c in children if process_state(int(c)) == "Z"]

    wait_until(lambda: zombies_of_pid1() == [] or None, timeout=10, what="pid 1 to reap what was handed to it")
    engine = int(Path(f"/proc/{init}/task/{init}/children").read_text().split()[0])
    assert process_state(engine) != "Z"  # pid 1's one child left: the engine, running
    os.kill(init, signal.SIGTERM)  # what `docker stop` sends pid 1: passed on, a graceful stop
    assert inside.wait_exit(timeout=30) == 0, inside.log()
    assert "engine stopped after" in inside.log()
    refused = subprocess.run([*_UNSHARE, *QUEUECTL, "run", "--until-idle"], capture_output=True, text=True,
                             env=cli_env(home, {"QUEUECTL_MAX_RETRIES": "lots"}), timeout=60, check=False)
    assert (refused.returncode, refused.stderr.count("\n")) == (2, 1), refused  # the engine's status, via pid 1


@_needs_pid_namespace
def test_as_a_containers_first_process_on_a_terminal_one_ctrl_c_is_a_graceful_stop(
    home: Path, work: Path, tmp_path: Path
) -> None:
    """`docker run -it ... queuectl run`: Ctrl-C goes to the terminal's foreground process group. Before, pid 1 and
    the engine were both in it, so the engine had SIGINT twice (the terminal's, and pid 1's passed on): one Ctrl-C
    was a fast stop that terminated the running jobs."""
    master, terminal = os.openpty()
    log = tmp_path / "engine.log"
    with open(log, "wb") as err:
        engine = subprocess.Popen(["setsid", "--ctty", *_UNSHARE, *QUEUECTL, "run"], stdin=terminal, stdout=terminal,
                                  stderr=err, env=cli_env(home))
    os.close(terminal)
    try:
        wait_until(lambda: "started with" in log.read_text() or None, timeout=20, what="the engine to start")
        enqueue(home, f"touch {work}/started; while [ ! -f {work}/go ]; do sleep 0.05; done", id="held", cwd=work)
        wait_until(lambda: (work / "started").exists() or None, timeout=20, what="the job to start")
        os.write(master, b"\x03")  # Ctrl-C
        wait_until(lambda: " stopping: " in log.read_text() or None, timeout=10, what="a graceful stop")
        (work / "go").touch()
        assert engine.wait(timeout=30) == 0, log.read_text()
    finally:
        if engine.poll() is None:
            engine.kill()
            engine.wait(timeout=10)
        kill_processes_of_home(home)
        os.close(master)
    assert "stopping now" not in log.read_text()
    done = job(home, "held")
    assert (done.state, done.runs) == (COMPLETED, 1)


@_needs_pid_namespace
def test_after_a_container_restart_until_idle_waits_for_the_dead_engines_jobs_and_runs_them(
    home: Path, work: Path, engines: Engines
) -> None:
    """A container restarted (same host name, a new pid namespace) cannot check the pid of the engine it had before,
    only its heartbeat. Before, `run --until-idle` there exited at once with that engine's job left processing."""
    before = engines.start(workers=1, launcher=_UNSHARE)
    before.wait_started()
    enqueue(home, f"[ -f {work}/first ] && exit 0; touch {work}/first; sleep 300", id="held", cwd=work)
    wait_until(lambda: (work / "first").exists() or None, timeout=20, what="the job to start in the first container")
    init = int(Path(f"/proc/{before.pid}/task/{before.pid}/children").read_text().split()[0])
    os.kill(init, signal.SIGKILL)  # the container dies: every process in its namespace, the job's too
    before.wait_exit(timeout=20)
    assert job(home, "held").state == PROCESSING
    summary, log = asyncio.run(run_until_idle(home, timeout=30, stale_after_s=2.0, recover_interval_s=0.5))
    assert summary.recovered == 1 and summary.completed == 1, log
    done = job(home, "held")
    assert (done.state, done.runs) == (COMPLETED, 2)


async def _engines(home: Path) -> list[EngineInfo]:
    async with Queue(home) as q:
        return await q.store.engines()


def test_an_engine_whose_log_nobody_reads_goes_on_running_jobs_and_stops_on_sigint(home: Path, work: Path) -> None:
    """`queuectl run 2>&1 | less` left unscrolled, or a terminal paused with Ctrl-S: the log's pipe fills after some
    hundreds of jobs. Before, the engine then froze (no job ran or was recorded, SIGINT went unanswered)."""
    n = 1500  # two lines each, ~100 bytes: well past the 64 KiB a pipe holds
    enqueue_many(home, ({"id": f"j{i}", "command": "true"} for i in range(n)), cwd=work)
    engine = subprocess.Popen([*QUEUECTL, "run", "--workers", "4"], env=cli_env(home), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)  # read by nobody until the end
    try:
        wait_until(lambda: all(j.state == COMPLETED for j in jobs(home).values()), timeout=60,
                   what=f"{n} jobs completed while the engine's log was not read")
        engine.send_signal(signal.SIGINT)
        assert engine.wait(timeout=30) == 0
    finally:
        if engine.poll() is None:
            engine.kill()
        engine.communicate(timeout=30)


def test_an_engine_started_with_nohup_keeps_running_on_sighup(home: Path, work: Path, engines: Engines) -> None:
    """SIGHUP stops an engine gracefully (its terminal closed), but not one whose caller asked to ignore it."""
    engine = engines.start(workers=2, launcher=["nohup"])
    enqueue(home, blocking(work, "A"), id="A", cwd=work)
    wait_for_states(home, {"A": PROCESSING}, timeout=10)
    engine.send(signal.SIGHUP)
    enqueue(home, "true", id="B", cwd=work)  # runs beside A: the engine did not stop claiming
    wait_for_states(home, {"B": COMPLETED}, timeout=10)
    assert engine.returncode is None and "stopping" not in engine.log()
    (work / "A.go").touch()
    wait_for_states(home, {"A": COMPLETED}, timeout=10)
    engine.send(signal.SIGTERM)
    assert engine.wait_exit() == 0
