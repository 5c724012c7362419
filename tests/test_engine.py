"""The engine end to end: real `queuectl run` subprocesses (or Engine in-process where no signal is involved),
a real SQLite file per test, real job processes, bounded waits."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from queuectl import engine as engine_module
from queuectl import jobspec, orphans
from queuectl.api import Queue
from queuectl.models import AttemptStatus, JobState, Outcome
from queuectl.procs import host_key, pid_alive
from queuectl.timefmt import iso
from tests.engine_helpers import (
    QUEUECTL,
    Engines,
    Reader,
    attempts,
    attempts_async,
    await_states,
    await_until,
    cli,
    cli_bytes,
    cli_env,
    cli_ok,
    config_set,
    cpu_seconds,
    engine_in_process,
    enqueue,
    enqueue_many,
    job,
    jobs,
    jobs_async,
    kill_processes_of_home,
    read_pids,
    run_until_idle,
    wait_for_states,
    wait_pids_gone,
)

COMPLETED, DEAD, FAILED, PENDING, PROCESSING = (JobState.COMPLETED, JobState.DEAD, JobState.FAILED,
                                               JobState.PENDING, JobState.PROCESSING)


@pytest.fixture(autouse=True)
def _no_stray_jobs(home: Path) -> Iterator[None]:
    yield
    kill_processes_of_home(home)


def spec(job_id: str, command: str, cwd: Path, **fields: Any) -> jobspec.NewJob:
    return jobspec.from_mapping({"id": job_id, "command": command, "cwd": str(cwd), **fields})


async def add(q: Queue, job_id: str, command: str, cwd: Path, **fields: Any) -> str:
    (added,) = await q.enqueue([spec(job_id, command, cwd, **fields)])
    return added


async def configure(home: Path, **values: str) -> None:
    async with Queue(home) as q:
        for key, value in values.items():
            await q.config_set(key.replace("_", "-"), value)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


# ---- running jobs ---------------------------------------------------------------------------------------------------


def test_basic_job_completes_with_until_idle(home: Path, work: Path) -> None:
    job_id = enqueue(home, f"echo hello > {work}/out", id="basic", cwd=work)
    proc = cli(home, "run", "--until-idle", timeout=60)
    assert proc.returncode == 0, proc.stderr
    done = job(home, job_id)
    assert done.state == COMPLETED
    assert done.attempts == 1
    assert done.exit_code == 0
    assert (work / "out").read_text() == "hello\n"
    assert re.search(r"basic completed in", proc.stderr)
    assert "engine stopped after" in proc.stderr.splitlines()[-1]
    assert "1 completed" in proc.stderr.splitlines()[-1]


def test_worker_start_count_is_the_same_as_run_workers(home: Path, work: Path) -> None:
    enqueue(home, "true", id="ws", cwd=work)
    proc = cli(home, "worker", "start", "--count", "3", "--until-idle", timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"engine \S+ started with 3 worker\(s\)", proc.stderr)
    assert job(home, "ws").state == COMPLETED


async def test_failing_job_retries_with_exponential_backoff_then_lands_in_the_dlq(home: Path, work: Path) -> None:
    await configure(home, backoff_base="1.05", max_retries="2")
    async with Queue(home) as q:
        await add(q, "flaky", f"echo run >> {work}/runs; exit 7", work)
    summary, log = await run_until_idle(home, timeout=30)
    assert lines(work / "runs") == ["run"] * 3  # max_retries + 1 runs
    async with Queue(home) as q:
        dead = await q.get("flaky")
        history = await q.store.attempts("flaky")
    assert dead.state == DEAD
    assert dead.attempts == 3
    assert dead.last_error == "exit code 7"
    assert [a.status for a in history] == [AttemptStatus.FAILED] * 3
    assert [a.exit_code for a in history] == [7, 7, 7]
    for k in (1, 2):  # after failed attempt k the job is due again in base ^ k seconds
        gap = history[k].started_at - history[k - 1].finished_at  # type: ignore[operator]
        assert 1.05**k - 0.01 <= gap < 1.05**k + 1.0, f"retry {k} came after {gap:.3f}s, expected {1.05**k:.3f}s"
    assert summary.retried == 2
    assert summary.dead == 1
    assert "flaky exit code 7; retrying in 1.1s" in log or "flaky exit code 7; retrying in 1.0s" in log
    assert "flaky exit code 7; retries spent, moved to the dead-letter queue" in log


async def test_backoff_delay_is_capped_by_backoff_max(home: Path, work: Path) -> None:
    await configure(home, backoff_base="1000", backoff_max="0.2s", max_retries="1")
    async with Queue(home) as q:
        await add(q, "capped", "exit 1", work)
    await run_until_idle(home, timeout=20)
    history = await attempts_async(home, "capped")
    assert len(history) == 2
    gap = history[1].started_at - history[0].finished_at  # type: ignore[operator]
    assert 0.19 <= gap < 2.0, f"retry came after {gap:.3f}s; capped delay is 0.2s (uncapped: 1000s)"


async def test_per_job_max_retries_overrides_the_configured_default(home: Path, work: Path) -> None:
    await configure(home, max_retries="2", backoff_max="0.05s")
    async with Queue(home) as q:
        await add(q, "zero", f"echo x >> {work}/zero; false", work, max_retries=0)
        await add(q, "four", f"echo x >> {work}/four; false", work, max_retries=4)
        await add(q, "default", f"echo x >> {work}/default; false", work)
    await run_until_idle(home, workers=3, timeout=30)
    assert len(lines(work / "zero")) == 1
    assert len(lines(work / "four")) == 5
    assert len(lines(work / "default")) == 3
    found = await jobs_async(home)
    assert {i: (j.state, j.attempts) for i, j in found.items()} == {
        "zero": (DEAD, 1), "four": (DEAD, 5), "default": (DEAD, 3)}


async def test_a_stored_value_that_cannot_be_used_costs_only_its_own_key(home: Path, work: Path) -> None:
    """A hand-edited config row. Before, one such value made the engine ignore every stored value: this job was
    retried three times (the default) instead of dying at once."""
    await configure(home, max_retries="0", backoff_max="0.05s")
    with contextlib.closing(sqlite3.connect(home / "queue.db")) as db, db:
        db.execute("INSERT INTO config(key, value) VALUES ('kill-grace', 'a while')")
    async with Queue(home) as q:
        await add(q, "once", "exit 1", work)
    _, log = await run_until_idle(home, timeout=20)
    assert [(j.state, j.attempts) for j in (await jobs_async(home)).values()] == [(DEAD, 1)]
    said = [line for line in log.splitlines() if "ignoring the stored value of kill-grace" in line]
    assert len(said) == 1, log  # once, not at every reload
    assert said[0].endswith("using its default: kill-grace must be a number of seconds or a duration like 30s, 5m, 2h; "
                            "got 'a while'")


def test_an_engine_refuses_a_bad_environment_override_before_claiming(home: Path, work: Path) -> None:
    """Before, it logged 'ignoring invalid stored config' and ran every job on the defaults."""
    assert cli(home, "enqueue", "--id", "j1", "--", "true").returncode == 0
    proc = cli(home, "run", "--until-idle", env={"QUEUECTL_MAX_RETRIES": "abc"})
    assert proc.returncode == 2
    assert proc.stderr == "queuectl: error: QUEUECTL_MAX_RETRIES: max-retries must be a whole number >= 0; got 'abc'\n"
    shown = cli(home, "list", "--json")
    assert [(j["id"], j["state"]) for j in json.loads(shown.stdout)] == [("j1", "pending")]


async def test_job_sees_its_id_and_attempt_number_and_until_idle_waits_for_the_retry(home: Path, work: Path) -> None:
    await configure(home, backoff_max="0.1s")
    async with Queue(home) as q:
        await add(q, "env-job", f'echo "$QUEUECTL_JOB_ID $QUEUECTL_ATTEMPT" >> {work}/seen; '
                                '[ "$QUEUECTL_ATTEMPT" -ge 3 ]', work)
    await run_until_idle(home, timeout=20)
    assert lines(work / "seen") == ["env-job 1", "env-job 2", "env-job 3"]
    assert (await jobs_async(home))["env-job"].state == COMPLETED


async def test_job_env_reaches_the_command_but_cannot_hide_the_engines_variables(
    home: Path, work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QC_TEST_INHERITED", "from-the-engine")
    env = {"GREETING": "grüß dich", "QC_TEST_INHERITED": "overridden", "QUEUECTL_JOB_ID": "spoofed",
           "QUEUECTL_ENGINE_ID": "spoofed"}
    async with Queue(home) as q:
        await add(q, "env-job", f'printf "%s\\n" "$GREETING" "$QC_TEST_INHERITED" "$QUEUECTL_JOB_ID" '
                                f'"$QUEUECTL_ENGINE_ID" "$HOME" > {work}/seen', work, env=env)
    await run_until_idle(home, timeout=20)
    greeting, inherited, job_id, engine_id, home_var = (work / "seen").read_text(encoding="utf-8").splitlines()
    assert (greeting, inherited, job_id, home_var) == ("grüß dich", "overridden", "env-job", str(Path.home()))
    assert engine_id not in ("", "spoofed")

async def test_a_jobs_own_queuectl_home_reaches_its_command(home: Path, work: Path) -> None:
    """QUEUECTL_HOME is the engine's by default, so that a follow-up enqueue reaches its queue; a job may name
    another queue's."""
    async with Queue(home) as q:
        await add(q, "other", f'echo "$QUEUECTL_HOME" > {work}/seen', work, env={"QUEUECTL_HOME": "/elsewhere"},
                  priority=1)
        await add(q, "own", f'echo "$QUEUECTL_HOME" >> {work}/seen', work)
    await run_until_idle(home, workers=1, timeout=20)
    assert lines(work / "seen") == ["/elsewhere", str(home)]


async def test_higher_priority_runs_first_then_enqueue_order(home: Path, work: Path) -> None:
    order = work / "order"
    async with Queue(home) as q:
        for job_id, priority in [("a0", 0), ("b5", 5), ("c1", 1), ("d10", 10), ("e5", 5), ("f0", 0)]:
            await add(q, job_id, f"echo {job_id} >> {order}", work, priority=priority)
    await run_until_idle(home, workers=1, timeout=20)
    assert lines(order) == ["d10", "b5", "e5", "c1", "a0", "f0"]


async def test_delayed_and_run_at_jobs_do_not_run_before_their_time(home: Path, work: Path) -> None:
    now = time.time()
    async with engine_in_process(home, workers=2) as (_engine, q, _log):
        await add(q, "later", f"date +%s.%N > {work}/later", work, delay=1.0)
        await add(q, "at", f"date +%s.%N > {work}/at", work, run_at=iso(now + 1.5))
        await add(q, "now", f"date +%s.%N > {work}/now", work)
        found = await await_states(q, {"later": COMPLETED, "at": COMPLETED, "now": COMPLETED}, timeout=15)
    started = {name: float((work / name).read_text()) for name in ("later", "at", "now")}
    assert started["later"] >= found["later"].run_at
    assert started["at"] >= found["at"].run_at >= now + 1.49
    assert started["now"] < found["later"].run_at
    # ...and not much later either: the engine sleeps until the due time, not a polling tick
    assert started["later"] - found["later"].run_at < 1.0
    assert started["at"] - found["at"].run_at < 1.0


async def test_a_small_scheduler_window_still_runs_every_delayed_job_in_due_order_and_on_time(
    home: Path, work: Path
) -> None:
    """12 delayed jobs through a window of 4: the heap must be refilled from the store as it runs dry."""
    now = time.time()
    names = [f"d{n:02d}" for n in range(12)]
    specs = [spec(name, f"echo {name} $(date +%s.%N) >> {work}/order", work, run_at=iso(now + 0.5 + 0.05 * n))
             for n, name in enumerate(names)]
    async with engine_in_process(home, workers=1, window=4) as (_engine, q, _log):
        await q.enqueue(list(reversed(specs)))  # enqueue order is the reverse of due order
        found = await await_states(q, dict.fromkeys(names, COMPLETED), timeout=20)
    rows = [line.split() for line in lines(work / "order")]
    assert [r[0] for r in rows] == names
    for name, started in rows:
        late = float(started) - found[name].run_at
        assert 0 <= late < 1.0, f"{name} started {late:+.3f}s from its due time"


async def test_multiple_workers_run_jobs_in_parallel(home: Path, work: Path) -> None:
    """Each job waits (up to 10 s) until all four have started: only four jobs at once can all succeed."""
    barrier = work / "barrier"
    barrier.mkdir()
    command = (f"touch {barrier}/$QUEUECTL_JOB_ID; i=0; while [ $(ls {barrier} | wc -l) -lt 4 ]; do "
               "sleep 0.02; i=$((i+1)); [ $i -gt 500 ] && exit 1; done; exit 0")
    async with Queue(home) as q:
        for n in range(4):
            await add(q, f"p{n}", command, work, max_retries=0)
    await run_until_idle(home, workers=4, timeout=30)
    assert {i: j.state for i, j in (await jobs_async(home)).items()} == {f"p{n}": COMPLETED for n in range(4)}


def test_200_jobs_on_8_workers_each_run_exactly_once(home: Path, work: Path) -> None:
    out = work / "ran"
    ids = enqueue_many(home, ({"id": f"j{n:03d}", "command": f"echo $QUEUECTL_JOB_ID >> {out}"} for n in range(200)),
                       cwd=work)
    proc = cli(home, "run", "--workers", "8", "--until-idle", timeout=90)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ran = lines(out)
    assert sorted(ran) == sorted(ids)  # every id exactly once (O_APPEND lines do not interleave)
    found = jobs(home)
    assert all(j.state == COMPLETED and j.attempts == 1 and j.runs == 1 for j in found.values())
    assert "200 completed" in proc.stderr.splitlines()[-1]


def test_two_engines_on_one_database_never_run_the_same_attempt_twice(
    home: Path, work: Path, engines: Engines
) -> None:
    first = engines.start(workers=4)
    second = engines.start(workers=4)
    out = work / "ran"
    ids = enqueue_many(home, ({"id": f"t{n:03d}", "command": f'echo "$QUEUECTL_JOB_ID $QUEUECTL_ATTEMPT" >> {out}'}
                              for n in range(200)), cwd=work)
    wait_for_states(home, dict.fromkeys(ids, COMPLETED), timeout=60)
    ran = lines(out)
    assert len(ran) == len(set(ran)) == 200
    assert sorted(ran) == sorted(f"{i} 1" for i in ids)
    by_engine: dict[str | None, int] = {}
    for job_id in ids[::10]:
        (only,) = attempts(home, job_id)
        by_engine[only.engine_id] = by_engine.get(only.engine_id, 0) + 1
    assert set(by_engine) <= {first.engine_id, second.engine_id}
    for engine in (first, second):
        engine.send(signal.SIGTERM)
        assert engine.wait_exit() == 0
    completed = [re.search(r"(\d+) completed", e.log_lines()[-1]) for e in (first, second)]
    counts = [int(m.group(1)) for m in completed if m]
    assert sum(counts) == 200
    assert all(c > 0 for c in counts), f"one engine ran everything ({counts}): no contention was tested"


# ---- other shells ---------------------------------------------------------------------------------------------------


def test_enqueue_from_another_process_is_picked_up_promptly_by_an_idle_engine(
    home: Path, work: Path, engines: Engines
) -> None:
    engines.start(workers=1)
    delays = _pickup_delays(home, work, 3)
    # the wake-up datagram, not the 1 s change poll or the 5 s idle sleep, must have woken the engine
    assert max(delays) < 0.5, f"pickup delays {delays}"


def _pickup_delays(home: Path, work: Path, jobs: int) -> list[float]:
    """Enqueue jobs one by one from another process; each one's delay from its enqueue to its command's start."""
    delays = []
    for n in range(jobs):
        job_id = enqueue(home, f"date +%s.%N > {work}/start-{n}", id=f"quick{n}", cwd=work)
        done = wait_for_states(home, {job_id: COMPLETED}, timeout=10)[job_id]
        delays.append(float((work / f"start-{n}").read_text()) - done.created_at)
    return delays


def test_an_engine_whose_wakeup_socket_was_removed_binds_it_again(home: Path, work: Path, engines: Engines) -> None:
    """The data directory cleaned under a running engine (a tmp cleaner): before, wake-ups missed it for good, and
    every enqueue from another shell waited for the 1 s change check."""
    engine = engines.start(workers=1)
    own = engine.wait_started()
    shutil.rmtree(home / "wake")
    engine.wait_log("was removed; bound again", timeout=10)
    assert [p.name for p in (home / "wake").iterdir()] == [f"{own}.sock"]
    delays = _pickup_delays(home, work, 5)
    assert max(delays) < 0.5, f"pickup delays {delays}"


def test_change_without_a_wakeup_is_noticed_by_the_fallback_check(
    home: Path, work: Path, engines: Engines
) -> None:
    engines.start(workers=1)

    async def enqueue_silently() -> float:
        async with Queue(home) as q:  # the store directly: no datagram to the engine
            t = time.time()
            await q.store.enqueue([spec("silent", f"date +%s.%N > {work}/start", work)], now=t)
            return t

    committed = asyncio.run(enqueue_silently())
    wait_for_states(home, {"silent": COMPLETED}, timeout=10)
    delay = float((work / "start").read_text()) - committed
    assert delay < 3.0, f"picked up after {delay:.2f}s; the change check runs every second"


def test_job_deleted_from_another_shell_before_its_time_never_runs(
    home: Path, work: Path, engines: Engines
) -> None:
    engines.start(workers=1)
    enqueue(home, f"touch {work}/deleted-ran", id="doomed", delay="1.5s", cwd=work)
    enqueue(home, f"touch {work}/marker-ran", id="marker", delay="1.8s", cwd=work)
    assert "deleted 1 job(s)" in cli_ok(home, "delete", "doomed")
    wait_for_states(home, {"marker": COMPLETED}, timeout=15)  # the engine has been past doomed's due time
    assert (work / "marker-ran").exists()
    assert not (work / "deleted-ran").exists()
    assert "doomed" not in jobs(home)


def test_idle_engine_uses_no_measurable_cpu(home: Path, engines: Engines) -> None:
    engine = engines.start(workers=4)
    before = cpu_seconds(engine.pid)
    time.sleep(2.0)  # a measurement window, not a synchronisation
    used = cpu_seconds(engine.pid) - before
    assert used <= 0.04, f"idle engine used {used:.3f}s of CPU in 2s"
    assert engine.returncode is None


def test_config_change_from_another_process_applies_to_the_next_decision(
    home: Path, work: Path, engines: Engines
) -> None:
    config_set(home, "max-retries", "1000")
    config_set(home, "backoff-max", "0.1s")
    engine = engines.start(workers=1)
    enqueue(home, f"echo x >> {work}/runs; false", id="stubborn", cwd=work)
    wait_for_states(home, {"stubborn": FAILED}, timeout=10)
    cli_ok(home, "config", "set", "max-retries", "0")  # from another shell
    stored = job(home, "stubborn").attempts  # attempts counted when the new value was already stored
    dead = wait_for_states(home, {"stubborn": DEAD}, timeout=10)["stubborn"]
    # at most the attempt in flight may still be decided with the old value
    assert dead.attempts <= stored + 2, f"{dead.attempts} attempts (>{stored} + 2): max-retries 0 applied late"
    assert engine.returncode is None  # no restart


def test_job_timeout_set_from_another_shell_applies_to_a_running_engine(
    home: Path, work: Path, engines: Engines
) -> None:
    config_set(home, "kill-grace", "0.5s")
    engine = engines.start(workers=1)
    cli_ok(home, "config", "set", "job-timeout", "0.5s")  # from another shell, while the engine runs
    enqueue(home, "sleep 30", id="slow", max_retries=0, cwd=work)
    dead = wait_for_states(home, {"slow": DEAD}, timeout=15)["slow"]
    assert dead.last_error == "timed out after 0.5s"
    (only,) = attempts(home, "slow")
    assert only.status == AttemptStatus.TIMED_OUT
    assert only.timed_out
    assert engine.returncode is None


def test_dlq_retry_from_another_shell_runs_the_job_again_on_the_running_engine(
    home: Path, work: Path, engines: Engines
) -> None:
    engines.start(workers=1)
    enqueue(home, f"test -f {work}/go", id="needs-go", max_retries=0, cwd=work)
    wait_for_states(home, {"needs-go": DEAD}, timeout=10)
    assert "needs-go" in cli_ok(home, "dlq", "list")
    (work / "go").touch()
    out = cli_ok(home, "dlq", "retry", "needs-go")
    assert "1 job(s) back in the queue" in out
    done = wait_for_states(home, {"needs-go": COMPLETED}, timeout=10)["needs-go"]
    assert done.attempts == 1  # reset by dlq retry, then one successful attempt
    assert [a.status for a in attempts(home, "needs-go")] == [AttemptStatus.FAILED, AttemptStatus.SUCCEEDED]


# ---- logs and status ------------------------------------------------------------------------------------------------


async def test_logs_prints_each_attempts_output(home: Path, work: Path) -> None:
    await configure(home, backoff_max="0.05s")
    async with Queue(home) as q:
        await add(q, "talky", 'echo "out $QUEUECTL_ATTEMPT"; echo "err $QUEUECTL_ATTEMPT" >&2; '
                              '[ "$QUEUECTL_ATTEMPT" -ge 2 ]', work)
    await run_until_idle(home, timeout=20)
    latest = cli(home, "logs", "talky")
    assert latest.returncode == 0, latest.stderr
    assert latest.stdout == "out 2\nerr 2\n"
    first = cli(home, "logs", "talky", "--attempt", "1")
    assert first.returncode == 0, first.stderr
    assert first.stdout == "out 1\nerr 1\n"
    beyond = cli(home, "logs", "talky", "--attempt", "3")
    assert beyond.returncode != 0
    assert len(beyond.stderr.splitlines()) == 1


async def test_logs_of_a_silent_attempt_print_nothing_and_of_a_deleted_log_the_kept_tail(
    home: Path, work: Path
) -> None:
    async with Queue(home) as q:
        await add(q, "silent", "true", work)
        await add(q, "talky", "echo said-this", work)
    await run_until_idle(home, timeout=20)
    silent = cli(home, "logs", "silent")
    assert (silent.returncode, silent.stdout, silent.stderr) == (0, "", "")
    assert not (home / "logs" / "silent#1.log").exists()  # nothing printed: no file made
    (home / "logs" / "talky#1.log").unlink()
    talky = cli(home, "logs", "talky")
    assert talky.returncode == 0, talky.stderr
    assert talky.stdout == "said-this\n"
    assert len(talky.stderr.splitlines()) == 1 and "was deleted" in talky.stderr


def test_logs_follow_prints_a_running_job_until_it_ends(home: Path, work: Path, engines: Engines) -> None:
    engines.start(workers=1)
    go = work / "go"
    enqueue(home, f"echo start; while [ ! -f {go} ]; do sleep 0.05; done; echo finish", id="followed", cwd=work)
    wait_for_states(home, {"followed": PROCESSING}, timeout=10)
    follower = subprocess.Popen([*QUEUECTL, "logs", "-f", "followed"], env=cli_env(home), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        reader = Reader(follower.stdout)
        reader.wait_for(b"start\n", timeout=10)
        assert follower.poll() is None, "logs -f exited while the job still runs"
        go.touch()
        assert reader.read_to_eof(timeout=10) == b"start\nfinish\n"
        assert follower.wait(timeout=10) == 0
    finally:
        if follower.poll() is None:
            follower.kill()
        follower.wait(timeout=10)
        assert follower.stdout is not None and follower.stderr is not None
        follower.stdout.close()
        follower.stderr.close()


def test_status_shows_the_engine_alive_and_what_it_runs(home: Path, work: Path, engines: Engines) -> None:
    engine = engines.start(workers=2)
    go = work / "go"
    enqueue(home, f"while [ ! -f {go} ]; do sleep 0.05; done", id="busy", cwd=work)
    wait_for_states(home, {"busy": PROCESSING}, timeout=10)
    data = json.loads(cli_ok(home, "status", "--json"))
    assert data["counts"]["processing"] == 1
    (shown,) = data["engines"]
    assert shown["id"] == engine.engine_id
    assert shown["pid"] == engine.pid
    assert shown["workers"] == 2
    assert shown["running"] == ["busy"]
    text = cli_ok(home, "status")
    assert str(engine.engine_id) in text
    assert "busy" in text
    go.touch()
    wait_for_states(home, {"busy": COMPLETED}, timeout=10)
    engine.send(signal.SIGTERM)
    assert engine.wait_exit() == 0
    assert json.loads(cli_ok(home, "status", "--json"))["engines"] == []


# ---- options and the engine's log -----------------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [["run", "--workers", "0"], ["run", "--workers=-1"], ["run", "-w", "-3"],
                                  ["worker", "start", "--count", "0"], ["worker", "start", "--count=-2"]])
def test_workers_zero_or_negative_is_refused_with_exit_2_and_one_line(home: Path, argv: list[str]) -> None:
    proc = cli(home, *argv, timeout=30)
    assert proc.returncode == 2
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("queuectl: error:")
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    assert "started" not in proc.stderr


@pytest.mark.parametrize("argv", [["run", "--log-format", "xml"], ["run", "--grace", "soon"],
                                  ["run", "--grace", "-1s"]])
def test_bad_log_format_or_grace_is_refused_with_exit_2_and_one_line(home: Path, argv: list[str]) -> None:
    proc = cli(home, *argv, timeout=30)
    assert proc.returncode == 2
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("queuectl: error:")
    assert "started" not in proc.stderr


def _event_jobs(home: Path, work: Path) -> None:
    config_set(home, "backoff-max", "0.05s")
    config_set(home, "kill-grace", "0.5s")
    enqueue(home, "true", id="ok", cwd=work)
    enqueue(home, "exit 3", id="bad", max_retries=1, cwd=work)
    enqueue(home, "sleep 30", id="slow", max_retries=1, timeout="0.3s", cwd=work)


def test_log_format_json_gives_one_json_object_per_line(home: Path, work: Path) -> None:
    _event_jobs(home, work)
    proc = cli(home, "run", "--workers", "3", "--until-idle", "--log-format", "json", timeout=60)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stderr.splitlines()]  # every line parses on its own
    assert records
    assert all(isinstance(r, dict) and "ts" in r and "event" in r for r in records)
    events = [(r["event"], r.get("job")) for r in records]
    for expected in [("engine_started", None), ("started", "ok"), ("completed", "ok"), ("failed", "bad"),
                     ("dead", "bad"), ("timed_out", "slow"), ("dead", "slow")]:
        assert expected in events, f"{expected} missing from {events}"
    assert records[-1]["event"] == "summary"
    assert records[-1]["completed"] == 1
    assert records[-1]["dead"] == 2


def test_text_log_has_one_readable_line_per_job_event(home: Path, work: Path) -> None:
    _event_jobs(home, work)
    proc = cli(home, "run", "--workers", "3", "--until-idle", timeout=60)
    assert proc.returncode == 0, proc.stderr
    log = proc.stderr
    assert re.search(r"^\S+Z ok started \(attempt 1\): true$", log, re.M)
    assert re.search(r"^\S+Z ok completed in \S+$", log, re.M)
    assert re.search(r"^\S+Z bad exit code 3; retrying in \S+$", log, re.M)
    assert re.search(r"^\S+Z bad exit code 3; retries spent, moved to the dead-letter queue$", log, re.M)
    assert re.search(r"^\S+Z slow timed out after 0.3s; retrying in \S+$", log, re.M)
    assert re.search(r"^\S+Z slow timed out after 0.3s; retries spent", log, re.M)
    last = log.splitlines()[-1]
    assert "engine stopped after" in last
    assert "1 completed" in last
    assert "2 dead" in last


# ---- faults ---------------------------------------------------------------------------------------------------------


async def test_timeout_through_the_engine_kills_the_tree_and_records_the_reason(home: Path, work: Path) -> None:
    await configure(home, kill_grace="0.5s")
    pids = work / "pids"
    async with Queue(home) as q:
        await add(q, "tree", f"sh -c 'sleep 300 & echo $! >> {pids}; sleep 300 & echo $! >> {pids}; wait'; "
                             f"echo $$ >> {pids}", work, timeout="0.5s", max_retries=0)
    await run_until_idle(home, timeout=20)
    dead = (await jobs_async(home))["tree"]
    assert dead.state == DEAD
    assert dead.last_error == "timed out after 0.5s"
    (only,) = await attempts_async(home, "tree")
    assert only.status == AttemptStatus.TIMED_OUT
    assert len(read_pids(pids)) == 2
    await asyncio.to_thread(wait_pids_gone, read_pids(pids), timeout=5)


async def test_faulty_commands_are_recorded_and_never_stop_the_engine(home: Path, work: Path) -> None:
    await configure(home, kill_grace="0.5s")
    daemon = work / "daemon.pid"
    cases = {
        "missing": ("no-such-command-queuectl", {}),
        "binary": (r"printf '\377\376\000x\n'", {}),
        "huge": ("head -c 8000000 /dev/zero | tr '\\0' h; echo", {}),
        "closes": ("exec 1>&- 2>&-; sleep 0.1", {}),
        "ignores-term": ("trap '' TERM; while :; do sleep 0.05; done", {"timeout": "0.3s"}),
        "daemon": (f"sleep 300 & echo $! > {daemon}", {}),
        "nowhere": ("true", {"cwd": "/nonexistent/queuectl-test-dir"}),
        "plain": ("true", {}),
    }
    async with Queue(home) as q:
        for job_id, (command, extra) in cases.items():
            cwd = Path(extra.pop("cwd", work))
            await add(q, job_id, command, cwd, max_retries=0, **extra)
    summary, _log = await run_until_idle(home, workers=2, timeout=40)
    found = await jobs_async(home)
    states = {i: j.state for i, j in found.items()}
    assert states == {"missing": DEAD, "binary": COMPLETED, "huge": COMPLETED, "closes": COMPLETED,
                      "ignores-term": DEAD, "daemon": COMPLETED, "nowhere": DEAD, "plain": COMPLETED}
    assert found["missing"].exit_code == 127
    assert found["ignores-term"].last_error == "timed out after 0.3s"
    assert (found["nowhere"].last_error or "").startswith("cannot start")
    assert summary.completed == 5
    assert summary.dead == 3
    binary_log = cli_bytes(home, "logs", "binary")
    assert binary_log.returncode == 0, binary_log.stderr
    assert binary_log.stdout == b"\xff\xfe\x00x\n"  # byte for byte, as the command wrote it
    huge = (home / "logs" / "huge#1.log").stat().st_size
    assert huge == 8_000_001
    assert daemon.exists()  # the daemon it forked is left to the autouse clean-up (by QUEUECTL_HOME)


@pytest.mark.parametrize("where", ["before its command starts", "while its command runs"])
async def test_internal_error_for_one_job_fails_that_job_and_the_others_go_on(
    home: Path, work: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """A fault of the engine's own code for one job (injected: a bug has no other trigger). Before its command
    started, it ended the worker's coroutine: with one worker, nothing ran again."""
    async with Queue(home) as q:
        await add(q, "broken", "true", work, max_retries=0)
        await add(q, "fine", "true", work)
    fault = RuntimeError("injected fault")
    if where == "before its command starts":
        real = engine_module.attempt_log_file

        def log_file(logs_dir: str, job_id: str, attempt: int) -> str:
            if job_id == "broken":
                raise fault
            return real(logs_dir, job_id, attempt)

        monkeypatch.setattr(engine_module, "attempt_log_file", log_file)
    else:
        real_run = engine_module.run_command

        async def run(command: str, **kwargs: Any) -> Outcome:
            outcome = await real_run(command, **kwargs)
            if "broken" in str(kwargs["log_path"]):
                raise fault
            return outcome

        monkeypatch.setattr(engine_module, "run_command", run)
    summary, log = await run_until_idle(home, workers=1, timeout=20)
    found = await jobs_async(home)
    assert found["fine"].state == COMPLETED
    assert found["broken"].state == DEAD  # failed, not lost, not stuck in processing
    assert found["broken"].last_error == "internal error: RuntimeError('injected fault')"
    assert re.search(r"broken internal error: RuntimeError\('injected fault'\)", log)
    assert summary.completed == 1
    (attempt,) = await attempts_async(home, "broken")
    if where != "before its command starts":  # the attempt keeps the command's start and its log
        assert attempt.log_path is not None and attempt.log_path.endswith("1.log")
        assert attempt.finished_at is not None and attempt.started_at < attempt.finished_at


def test_unusable_data_directory_is_one_clear_line_and_a_non_zero_exit(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    proc = cli(blocker / "home", "run", "--until-idle", timeout=30)
    assert proc.returncode != 0
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("queuectl: error:")
    assert "data directory" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_data_directory_whose_path_is_not_utf8_is_refused_before_any_job_is_claimed(tmp_path: Path) -> None:
    """Log paths are stored as UTF-8 text: the first result recorded failed, and the job stayed processing."""
    home = tmp_path / "caf\udce9"  # b"caf\xe9"
    assert cli(home, "enqueue", "--id", "j1", "--", "true").returncode == 0
    proc = cli(home, "run", "--until-idle", timeout=30)
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1] == (
        f"queuectl: error: cannot run an engine in data directory {os.fsencode(home)!r}: its path is not valid "
        f"UTF-8 text (byte 0xe9 at character {len(str(tmp_path)) + 5}); choose another --home")
    shown = cli(home, "list", "--json")
    assert [(j["id"], j["state"]) for j in json.loads(shown.stdout)] == [("j1", "pending")]


def test_database_removed_under_a_running_engine_stops_it_with_one_clear_line(
    home: Path, engines: Engines
) -> None:
    engine = engines.start(workers=1)
    for name in ("queue.db", "queue.db-wal", "queue.db-shm"):
        (home / name).unlink(missing_ok=True)
    code = engine.wait_exit(timeout=20)  # noticed at the next heartbeat (every 5 s)
    assert code != 0
    log = engine.log()
    assert "Traceback" not in log
    last = log.splitlines()[-1]
    assert last.startswith("queuectl: error:"), last
    assert "queue.db" in last


def test_engine_runs_with_a_long_data_directory_path(tmp_path: Path, work: Path) -> None:
    """A data directory with a long path (deep CI workspaces, long home directories) must still run jobs: the
    wake-up socket is an optimisation and must not stop the engine."""
    deep = tmp_path.joinpath(*["a-rather-long-directory-name"] * 4)
    enqueue(deep, "true", id="deep", cwd=work)
    proc = cli(deep, "run", "--until-idle", timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert job(deep, "deep").state == COMPLETED


async def test_stop_of_an_in_process_engine_is_graceful(home: Path, work: Path) -> None:
    """request_stop() (what SIGTERM calls) lets the running job finish and claims nothing more."""
    go = work / "go"
    async with engine_in_process(home, workers=1) as (engine, q, log):
        await add(q, "running", f"while [ ! -f {go} ]; do sleep 0.02; done", work, priority=1)
        await add(q, "waiting", "true", work)
        await await_states(q, {"running": PROCESSING}, timeout=10)
        engine.request_stop()
        go.touch()
        await await_states(q, {"running": COMPLETED}, timeout=10)
    found = await jobs_async(home)
    assert found["waiting"].state == PENDING
    assert found["waiting"].runs == 0
    assert "stopping" in log.getvalue()



@pytest.mark.parametrize(("column", "value"), [("env", "{bad"), ("tags", "[1"), ("env", '"a string"'),
                                               ("env", '{"A": 5}')])
async def test_a_row_whose_stored_json_cannot_be_read_fails_alone(
    home: Path, work: Path, column: str, value: str
) -> None:
    """A row written by something other than queuectl. Before, decoding it raised in every claim and every listing:
    the engine stopped at each start, and `list` and `inspect` failed, so no other job ran either."""
    async with Queue(home) as q:
        await add(q, "damaged", "true", work, max_retries=0)
        await add(q, "fine", "true", work)
    with contextlib.closing(sqlite3.connect(home / "queue.db")) as db, db:
        db.execute(f"UPDATE jobs SET {column} = ? WHERE id = 'damaged'", (value,))
    listed = cli(home, "list")
    assert listed.returncode == 0 and "damaged" in listed.stdout, listed.stderr
    await run_until_idle(home, workers=1, timeout=20)
    found = await jobs_async(home)
    assert (found["fine"].state, found["damaged"].state) == (COMPLETED, DEAD)
    assert f"its stored {column} cannot be read" in (found["damaged"].last_error or "")
    shown = cli(home, "inspect", "damaged")
    assert shown.returncode == 0 and f"its stored {column} cannot be read" in shown.stdout, shown.stderr


@pytest.mark.parametrize(("column", "value"), [("priority", "high"), ("timeout_s", "soon"), ("max_retries", "lots"),
                                               ("attempts", "x"), ("run_at", "tomorrow")])
async def test_a_row_with_text_in_a_number_column_fails_alone(home: Path, work: Path, column: str, value: str) -> None:
    """SQLite keeps text in a number column. Before, such a row stopped the engine (priority, run_at: at every
    start), hung it (max_retries: a worker died deciding the retry), or ran the command unwatched (timeout_s)."""
    await configure(home, backoff_max="0.05s")
    async with Queue(home) as q:
        await add(q, "damaged", f"echo ran >> {work}/ran", work, max_retries=0)
        await add(q, "fine", "true", work)
    with contextlib.closing(sqlite3.connect(home / "queue.db")) as db, db:
        db.execute(f"UPDATE jobs SET {column} = ? WHERE id = 'damaged'", (value,))
    assert f"its stored {column} is not a number ('{value}')" in cli(home, "inspect", "damaged").stdout
    listed = cli(home, "list")
    assert listed.returncode == 0 and "damaged" in listed.stdout, listed.stderr
    await run_until_idle(home, workers=1, timeout=20)
    found = await jobs_async(home)
    assert found["fine"].state == COMPLETED
    if column == "run_at":  # never due (text sorts after every time), and said so
        assert found["damaged"].state == PENDING
        assert found["damaged"].damaged == "its stored run_at is not a number ('tomorrow')"
        return
    assert found["damaged"].state == DEAD
    assert found["damaged"].last_error == f"cannot start: its stored {column} is not a number ('{value}')"
    assert not (work / "ran").exists()


async def test_an_attempt_row_with_text_in_a_number_column_is_shown_not_fatal(home: Path, work: Path) -> None:
    """Before, `inspect` printed the job, then failed on its attempts with 'internal error: TypeError'."""
    async with Queue(home) as q:
        await add(q, "ran", "echo hi", work)
    await run_until_idle(home, timeout=20)
    with contextlib.closing(sqlite3.connect(home / "queue.db")) as db, db:
        db.execute("UPDATE attempts SET started_at = 'x', finished_at = 'later', exit_code = 'y', number = 'one'")
    shown = cli(home, "inspect", "ran")
    assert (shown.returncode, shown.stderr) == (0, ""), shown
    assert "output tail (attempt" in shown.stdout
    for args in (["inspect", "ran", "--json"], ["stats"], ["logs", "ran"]):
        done = cli(home, *args)  # shown, or refused in one line: never a traceback or an internal error
        assert done.returncode in (0, 1) and "Traceback" not in done.stderr, done
        assert "internal error" not in done.stderr, done


def test_no_pid_that_a_process_cannot_have_is_alive() -> None:
    """kill(0, 0) asks about this process group and kill(-1, 0) about every process: both answer yes. A pid beyond
    pid_t made kill() raise OverflowError."""
    assert not pid_alive(0)
    assert not pid_alive(-1)
    assert not pid_alive(2**40)
    assert pid_alive(os.getpid())


@pytest.mark.parametrize("pid", [0, 2**40, "not-a-pid", 1.5, "times"])
async def test_an_engine_row_with_an_impossible_pid_is_an_engine_gone(home: Path, work: Path, pid: object) -> None:
    """A hand-edited or corrupted engines row. Before, pid 2**40 or text made every engine's start-up (the recovery
    sweep) and `status` fail, and pid 0 made `worker stop` send SIGTERM to its own process group."""
    async with Queue(home) as q:
        await add(q, "held", "true", work)
    host, now = host_key(), time.time()
    with contextlib.closing(sqlite3.connect(home / "queue.db")) as db, db:
        if pid == "times":  # a live pid (init's), but text where its times belong
            db.execute("INSERT INTO engines(id, host, pid, workers, started_at, heartbeat_at) "
                       "VALUES (?, ?, 1, 'four', 'yesterday', 'now')", (f"{host}-1-bad", host))
        else:
            db.execute("INSERT INTO engines(id, host, pid, workers, started_at, heartbeat_at) "
                       "VALUES (?, ?, ?, 1, ?, ?)", (f"{host}-1-bad", host, pid, now, now))
        db.execute("UPDATE jobs SET state = 'processing', engine_id = ?, runs = 1, started_at = ? WHERE id = 'held'",
                   (f"{host}-1-bad", now))
    # Its own session: were SIGTERM sent to "process group 0", it would reach this command alone.
    stop = subprocess.run([*QUEUECTL, "worker", "stop"], env=cli_env(home), capture_output=True, text=True,  # noqa: ASYNC221
                          timeout=30, check=False, start_new_session=True)
    assert (stop.returncode, stop.stdout.strip(), stop.stderr) == (0, "no engine is running", "")
    status = cli(home, "status")
    assert status.returncode == 0, status.stderr
    assert "none running" in status.stdout
    summary, _log = await run_until_idle(home, workers=1, timeout=20)
    assert summary.recovered == 1
    assert (await jobs_async(home))["held"].state == COMPLETED


def test_a_job_that_enqueues_a_follow_up_reaches_its_own_engines_queue(tmp_path: Path, work: Path) -> None:
    """The engine was given a relative --home, not QUEUECTL_HOME: a job's `queuectl enqueue` (run elsewhere) went
    to the default data directory instead, and the follow-up never ran."""
    default = tmp_path / "xdg"
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUECTL_")} | {"XDG_DATA_HOME": str(default)}
    follow_up = f"{sys.executable} -m queuectl enqueue --id child -- echo child-ran"

    def queuectl(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*QUEUECTL, "--home", "q", *args], env=env, cwd=tmp_path, input=input,
                              capture_output=True, text=True, timeout=60, check=False)

    added = queuectl("enqueue", "--file", "-", input=json.dumps({"id": "parent", "command": follow_up,
                                                                   "cwd": str(work)}))
    assert added.returncode == 0, added.stderr
    ran = queuectl("run", "--until-idle")
    assert ran.returncode == 0, ran.stderr
    assert {j.id: j.state for j in jobs(tmp_path / "q").values()} == {"parent": COMPLETED, "child": COMPLETED}
    assert not default.exists()


async def test_a_fault_in_a_background_duty_is_logged_and_the_duty_starts_again(
    home: Path, work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fault of the engine's own code in the recovery sweep (injected: once an engines row with a text pid did
    it) killed the sweep in silence, and no job of an engine that died afterwards was recovered by this one."""
    host = host_key()

    def db_do(sql: str, params: tuple[object, ...] = ()) -> None:
        with contextlib.closing(sqlite3.connect(home / "queue.db")) as db, db:
            db.execute(sql, params)

    faults = [RuntimeError("injected fault")]
    real_sweep = orphans.kill_leftovers

    def sweep(own_host: str, own_id: str) -> list[str]:
        if faults:
            raise faults.pop()
        return real_sweep(own_host, own_id)

    register = "INSERT INTO engines(id, host, pid, workers, started_at, heartbeat_at) VALUES (?, ?, ?, 1, ?, ?)"
    async with engine_in_process(home, workers=1, recover_interval_s=0.1) as (_engine, q, log):
        monkeypatch.setattr(orphans, "kill_leftovers", sweep)  # after start-up's own sweep
        await await_until(lambda: "recovery: internal error: RuntimeError('injected fault'); starting it again in "
                          "1.0s" in log.getvalue(), timeout=10, what="the sweep's fault in the log")
        # Then an engine dies holding a job (its pid is one that no longer runs): the sweep, started again, finds it.
        gone = await asyncio.create_subprocess_exec("true")
        await gone.wait()
        dead_id = orphans.engine_id(host, gone.pid, "gone")
        await add(q, "held", "true", work, delay=3600)
        db_do(register, (dead_id, host, gone.pid, time.time(), time.time()))
        db_do("UPDATE jobs SET state = 'processing', engine_id = ?, runs = 1, run_at = ? WHERE id = 'held'",
              (dead_id, time.time()))
        found = await await_states(q, {"held": COMPLETED}, timeout=20)
    assert found["held"].attempts == 1
    assert "recovered 1 job(s)" in log.getvalue()


async def test_a_timed_out_job_loses_the_daemons_it_started_too(home: Path, work: Path) -> None:
    """A daemon (setsid) leaves the job's process group; the engine finds it by the job's variables on timeout."""
    pids = work / "pids"
    async with Queue(home) as q:
        await add(q, "daemonizes", f"setsid sh -c 'echo $$ >> {pids}; exec sleep 300' & echo $$ >> {pids}; sleep 300",
                  work, timeout=1, max_retries=0)
    _summary, log = await run_until_idle(home, timeout=30)
    assert "daemonizes timed out after 1s" in log
    seen = read_pids(pids)
    assert len(seen) == 2
    await asyncio.to_thread(wait_pids_gone, seen, timeout=5)


@pytest.mark.parametrize("closed", ["2>&-", ">&- 2>&- <&-"])
def test_an_engine_started_with_its_stdio_closed_runs_its_jobs(home: Path, work: Path, closed: str) -> None:
    """`queuectl run 2>&-`: Python's sys.stderr is None then, and the engine failed to start (exit 1, in silence)."""
    enqueue(home, "echo hi", id="j1", cwd=work)
    ran = subprocess.run(["sh", "-c", f'exec "$@" {closed}', "sh", *QUEUECTL, "run", "--until-idle"],
                         env=cli_env(home), capture_output=True, timeout=60, check=False)
    assert ran.returncode == 0
    assert job(home, "j1").state == COMPLETED
    assert (home / "logs" / "j1#1.log").read_text() == "hi\n"
