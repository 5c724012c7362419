"""The engine on PostgreSQL, end to end: real `queuectl run` processes whose QUEUECTL_DATABASE_URL names a fresh
schema of the real server of tests/pg.py, real job processes, real signals, the CLI from other processes (and other
data directories, as another host would have), bounded waits. Also the leader-only recovery sweep.

The same behaviours on SQLite are tests/test_engine.py's and tests/test_engine_signals.py's. The test process
reads the queue through one plain psycopg connection to the test's schema.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from queuectl import jobspec
from queuectl.api import Queue
from queuectl.models import Attempt, AttemptStatus, EngineInfo, Job, JobState
from queuectl.timefmt import iso
from tests.engine_helpers import (
    QUEUECTL,
    EngineProc,
    Engines,
    cli,
    cli_ok,
    kill_processes_of_home,
    process_gone,
    wait_for_pids,
    wait_until,
)
from tests.pg import postgres_url, reserve_schema, skip_unless_reachable, url_with_schema

psycopg = pytest.importorskip("psycopg", reason="PostgreSQL store not available (pip install .[postgres])")
from psycopg.conninfo import conninfo_to_dict  # noqa: E402
from psycopg.rows import dict_row  # noqa: E402

from queuectl.store.postgres import PostgresStore  # noqa: E402
from queuectl.store.postgres_schema import RECOVERY_LOCK  # noqa: E402

COMPLETED, DEAD, PENDING, PROCESSING = JobState.COMPLETED, JobState.DEAD, JobState.PENDING, JobState.PROCESSING
INTERRUPTED, SUCCEEDED = AttemptStatus.INTERRUPTED, AttemptStatus.SUCCEEDED


class Pg:
    """One test's queue: a fresh schema, the URL engines and the CLI get, and a connection to read it with."""

    def __init__(self, base_url: str, schema: str) -> None:
        self.base_url = base_url
        self.schema = schema
        self.url = url_with_schema(base_url, schema)
        self.env = {"QUEUECTL_DATABASE_URL": self.url}
        asyncio.run(self._migrate())
        self.conn = psycopg.connect(self.url, autocommit=True, row_factory=dict_row)

    async def _migrate(self) -> None:
        store = PostgresStore(self.url)
        await store.open()  # creates the schema and its tables, as any first command would
        await store.close()

    def close(self) -> None:
        self.conn.close()

    def rows(self, query: Any, params: Any = None) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.conn.execute(query, params).fetchall()
        return rows

    def jobs(self) -> dict[str, Job]:
        return {r["id"]: Job.from_row(r) for r in self.rows("SELECT * FROM jobs")}

    def job(self, job_id: str) -> Job:
        return self.jobs()[job_id]

    def attempts(self, job_id: str) -> list[Attempt]:
        return [Attempt.from_row(r) for r in self.rows("SELECT * FROM attempts WHERE job_id = %s ORDER BY number",
                                                       (job_id,))]

    def wait_states(self, wanted: Mapping[str, JobState | Iterable[JobState]], *, timeout: float = 20.0
                    ) -> dict[str, Job]:
        """Poll until every listed job is in its wanted state (or one of them); returns every job."""
        def ok(job: Job | None, want: JobState | Iterable[JobState]) -> bool:
            return job is not None and (job.state == want if isinstance(want, JobState) else job.state in set(want))

        def probe() -> dict[str, Job] | None:
            found = self.jobs()
            return found if all(ok(found.get(i), w) for i, w in wanted.items()) else None

        try:
            return wait_until(probe, timeout=timeout, interval=0.05, what="job states")
        except AssertionError:
            now = {i: (j.state.value, j.attempts, j.last_error) for i, j in self.jobs().items() if i in wanted}
            raise AssertionError(f"jobs did not reach {dict(wanted)} within {timeout:g}s; now: {now}") from None

    def running_ids(self) -> set[str]:
        return {r["id"] for r in self.rows("SELECT id FROM jobs WHERE state = 'processing'")}


@pytest.fixture
def base_url() -> str:
    url = postgres_url()
    skip_unless_reachable(url)
    return url


@pytest.fixture
def pg(base_url: str) -> Iterator[Pg]:
    queue = Pg(base_url, reserve_schema(base_url))
    try:
        yield queue
    finally:
        queue.close()


@pytest.fixture(autouse=True)
def _no_stray_jobs(home: Path) -> Iterator[None]:
    yield
    kill_processes_of_home(home)


def qcli(home: Path, pg: Pg, *args: str, **kwargs: Any) -> str:
    """`queuectl ARGS` against the test's database (exit 0 required); returns stdout."""
    return cli_ok(home, *args, env=pg.env, **kwargs)


def enqueue(home: Path, pg: Pg, command: str, *, cwd: Path, **flags: object) -> str:
    args: list[str] = []
    for name, value in flags.items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    return qcli(home, pg, "enqueue", *args, "--", command, cwd=cwd).strip()


def enqueue_many(home: Path, pg: Pg, jobs: Iterable[Mapping[str, Any]], *, cwd: Path) -> list[str]:
    text = "".join(json.dumps(dict(job)) + "\n" for job in jobs)
    return qcli(home, pg, "enqueue", "--file", "-", input=text, cwd=cwd, timeout=60).split()


def start(engines: Engines, pg: Pg, *args: str, workers: int = 1, wait: bool = True) -> EngineProc:
    return engines.start(*args, workers=workers, wait=wait, env=pg.env)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def blocking(work: Path, name: str) -> str:
    """A job that runs until the file work/<name>.go exists."""
    return f"touch {work}/{name}.started; while [ ! -f {work}/{name}.go ]; do sleep 0.02; done"


@contextlib.contextmanager
def other_engines(tmp_path: Path, name: str) -> Iterator[Engines]:
    """Engines with a data directory of their own (as on another host: only the database is shared)."""
    (tmp_path / name).mkdir()
    with Engines(tmp_path / name / "home", tmp_path / name) as started:
        yield started


# ---- running jobs ---------------------------------------------------------------------------------------------------


def test_basic_job_completes_and_is_seen_from_another_data_directory(
        home: Path, work: Path, tmp_path: Path, pg: Pg) -> None:
    job_id = enqueue(home, pg, f"echo hello > {work}/out", cwd=work, id="basic")
    proc = cli(home, "run", "--until-idle", env=pg.env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    done = pg.job(job_id)
    assert (done.state, done.attempts, done.runs, done.exit_code) == (COMPLETED, 1, 1, 0)
    assert (work / "out").read_text() == "hello\n"
    assert "1 completed" in proc.stderr.splitlines()[-1]
    status = json.loads(qcli(tmp_path / "elsewhere", pg, "status", "--json"))
    assert status["counts"]["completed"] == 1 and status["engines"] == []
    inspected = json.loads(qcli(tmp_path / "elsewhere", pg, "inspect", job_id, "--json"))
    assert inspected["state"] == "completed"


def test_failing_job_retries_with_exponential_backoff_then_lands_in_the_dlq(home: Path, work: Path, pg: Pg) -> None:
    qcli(home, pg, "config", "set", "backoff-base", "1.05")
    qcli(home, pg, "config", "set", "max-retries", "2")
    enqueue(home, pg, f"echo run >> {work}/runs; exit 7", cwd=work, id="flaky")
    proc = cli(home, "run", "--until-idle", env=pg.env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert lines(work / "runs") == ["run"] * 3  # max_retries + 1 runs
    dead = pg.job("flaky")
    assert (dead.state, dead.attempts, dead.last_error) == (DEAD, 3, "exit code 7")
    history = pg.attempts("flaky")
    assert [(a.status, a.exit_code) for a in history] == [(AttemptStatus.FAILED, 7)] * 3
    for k in (1, 2):  # after failed attempt k the job is due again in base ^ k seconds
        gap = history[k].started_at - history[k - 1].finished_at  # type: ignore[operator]
        assert 1.05**k - 0.01 <= gap < 1.05**k + 1.0, f"retry {k} came after {gap:.3f}s, expected {1.05**k:.3f}s"
    assert "flaky exit code 7; retries spent, moved to the dead-letter queue" in proc.stderr
    assert "flaky" in qcli(home, pg, "dlq", "list")


def test_higher_priority_runs_first_then_enqueue_order(home: Path, work: Path, pg: Pg) -> None:
    order = work / "order"
    enqueue_many(home, pg, ({"id": i, "command": f"echo {i} >> {order}", "priority": p}
                            for i, p in [("a0", 0), ("b5", 5), ("c1", 1), ("d10", 10), ("e5", 5), ("f0", 0)]),
                 cwd=work)
    proc = cli(home, "run", "--workers", "1", "--until-idle", env=pg.env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert lines(order) == ["d10", "b5", "e5", "c1", "a0", "f0"]


def test_delayed_and_run_at_jobs_do_not_run_before_their_time(
        home: Path, work: Path, pg: Pg, engines: Engines) -> None:
    start(engines, pg, workers=2)
    now = time.time()
    enqueue_many(home, pg, [{"id": "later", "command": f"date +%s.%N > {work}/later", "delay": "1.5s"},
                            {"id": "at", "command": f"date +%s.%N > {work}/at", "run_at": iso(now + 2.0)},
                            {"id": "now", "command": f"date +%s.%N > {work}/now"}], cwd=work)
    found = pg.wait_states({"later": COMPLETED, "at": COMPLETED, "now": COMPLETED}, timeout=20)
    started = {name: float((work / name).read_text()) for name in ("later", "at", "now")}
    assert started["later"] >= found["later"].run_at >= now + 1.5
    assert started["at"] >= found["at"].run_at >= now + 1.99
    assert started["now"] < found["later"].run_at
    # ...and not much later either: the engine sleeps until the due time
    assert started["later"] - found["later"].run_at < 1.0
    assert started["at"] - found["at"].run_at < 1.0


# ---- other processes ------------------------------------------------------------------------------------------------


async def test_enqueue_from_another_process_is_picked_up_promptly_through_notify(
        home: Path, work: Path, tmp_path: Path, pg: Pg, engines: Engines) -> None:
    """This process enqueues with a data directory of its own, so no wake-up datagram can reach the engine: only
    NOTIFY (or the engine's 1 s change poll, which alone would make 8 pickups out of 10 within 0.3 s a 0.16%
    chance)."""
    start(engines, pg, workers=1)
    listeners = pg.rows("SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = 'queuectl-listen' "
                        "AND datname = current_database()")
    assert listeners[0]["n"] >= 1
    delays: list[float] = []
    async with Queue(tmp_path / "elsewhere", pg.url) as q:
        for n in range(10):
            stamp = work / f"start-{n}"
            await asyncio.sleep(0.05 + 0.3 * (n % 5) / 5)  # not a synchronisation: spread the phase vs the poll
            t0 = time.time()
            await q.enqueue([jobspec.from_mapping({"id": f"quick{n}", "command": f"exec date +%s.%N > {stamp}",
                                                   "cwd": str(work)})])
            deadline = time.monotonic() + 10
            while not (stamp.exists() and stamp.read_text().endswith("\n")):
                assert time.monotonic() < deadline, f"quick{n} not started within 10 s"
                await asyncio.sleep(0.005)
            delays.append(float(stamp.read_text()) - t0)
    assert sum(d < 0.3 for d in delays) >= 8, f"pickup delays {[round(d, 3) for d in delays]}"
    # ...and through the real CLI of another data directory
    t0 = time.time()
    enqueue(tmp_path / "elsewhere", pg, f"exec date +%s.%N > {work}/cli", cwd=work, id="from-cli")
    pg.wait_states({"from-cli": COMPLETED}, timeout=10)
    assert float((work / "cli").read_text()) - t0 < 5.0


def test_worker_stop_from_another_process_stops_the_engine_after_its_job(
        home: Path, work: Path, tmp_path: Path, pg: Pg, engines: Engines) -> None:
    engine = start(engines, pg, workers=1)
    enqueue(home, pg, f"sleep 1; echo done > {work}/done", cwd=work, id="finishing")
    pg.wait_states({"finishing": PROCESSING}, timeout=10)
    proc = cli(tmp_path / "elsewhere", "worker", "stop", "--wait", env=pg.env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert f"{engine.engine_id} (pid {engine.pid} on " in proc.stdout and "stopped" in proc.stdout
    assert pg.job("finishing").state == COMPLETED  # the running job finished before the engine stopped
    assert (work / "done").read_text() == "done\n"
    assert engine.wait_exit(timeout=5) == 0
    assert "engine stopped after" in engine.log_lines()[-1]
    assert pg.rows("SELECT id FROM engines") == []
    assert json.loads(qcli(home, pg, "status", "--json"))["engines"] == []


# ---- signals and crashes --------------------------------------------------------------------------------------------


def test_sigterm_stops_gracefully_claims_nothing_new_and_exits_0(
        home: Path, work: Path, pg: Pg, engines: Engines) -> None:
    engine = start(engines, pg, workers=2)
    enqueue(home, pg, blocking(work, "A"), cwd=work, id="A")
    enqueue(home, pg, blocking(work, "B"), cwd=work, id="B")
    pg.wait_states({"A": PROCESSING, "B": PROCESSING}, timeout=10)
    enqueue(home, pg, f"touch {work}/C.ran", cwd=work, id="C")  # waits for a free worker
    engine.send(signal.SIGTERM)
    engine.wait_log(r"stopping", timeout=10)
    (work / "A.go").touch()
    pg.wait_states({"A": COMPLETED}, timeout=10)  # a worker is free now: a running engine would take C
    assert engine.returncode is None, "the engine exited before its running job B finished"
    (work / "B.go").touch()
    assert engine.wait_exit(timeout=15) == 0
    found = pg.jobs()
    assert found["B"].state == COMPLETED
    assert (found["C"].state, found["C"].runs) == (PENDING, 0)
    assert not (work / "C.ran").exists()
    assert "2 completed" in engine.log_lines()[-1]
    assert pg.rows("SELECT id FROM engines") == []  # deregistered


def test_kill9_then_restart_loses_nothing_and_reruns_only_the_interrupted_jobs(
        home: Path, work: Path, pg: Pg, engines: Engines) -> None:
    runs, release = work / "runs", work / "release"
    command = f"echo $QUEUECTL_JOB_ID >> {runs}; while [ ! -f {release} ]; do sleep 0.02; done"
    ids = enqueue_many(home, pg, ({"id": f"k{n}", "command": command} for n in range(6)), cwd=work)
    engine = start(engines, pg, workers=2)
    interrupted = wait_until(lambda: pg.running_ids() if len(pg.running_ids()) == 2 else None, timeout=10,
                             what="2 jobs running")
    wait_until(lambda: len(lines(runs)) == 2 or None, timeout=10, what="2 runs recorded")
    engine.kill9()
    release.touch()
    proc = cli(home, "run", "--workers", "2", "--until-idle", env=pg.env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "recovered 2 job(s)" in proc.stderr
    found = pg.jobs()
    assert {i: j.state for i, j in found.items()} == dict.fromkeys(ids, COMPLETED)
    ran = lines(runs)
    for job_id in ids:
        expected = 2 if job_id in interrupted else 1  # at-least-once: only the jobs running at the kill rerun
        assert ran.count(job_id) == expected, f"{job_id} ran {ran.count(job_id)} times"
        assert found[job_id].attempts == 1  # the interrupted attempt is not counted
        statuses = [a.status for a in pg.attempts(job_id)]
        assert statuses == ([INTERRUPTED, SUCCEEDED] if job_id in interrupted else [SUCCEEDED])
    assert [r["id"] for r in pg.rows("SELECT id FROM engines")] == []  # the dead engine's row went with recovery


# ---- engines sharing one database -----------------------------------------------------------------------------------

SHARED_JOBS = 2000


def test_two_engines_with_separate_homes_on_one_database_never_run_an_attempt_twice(
        home: Path, work: Path, tmp_path: Path, pg: Pg) -> None:
    out = work / "runs"
    with other_engines(tmp_path, "host-a") as a, other_engines(tmp_path, "host-b") as b:
        first, second = start(a, pg, workers=4), start(b, pg, workers=4)
        ids = enqueue_many(home, pg, ({"id": f"t{n:04d}", "command": f"echo $QUEUECTL_JOB_ID >> {out}"}
                                      for n in range(SHARED_JOBS)), cwd=work)
        deadline = time.monotonic() + 60
        while (left := pg.rows("SELECT count(*) AS n FROM jobs WHERE state <> 'completed'")[0]["n"]) > 0:
            assert time.monotonic() < deadline, f"{left} of {SHARED_JOBS} jobs not completed within 60 s"
            time.sleep(0.2)
        ran = lines(out)
        assert len(ran) == SHARED_JOBS and Counter(ran).most_common(1)[0][1] == 1  # O_APPEND lines: no interleaving
        assert sorted(ran) == sorted(ids)
        assert pg.rows("SELECT count(*) AS n FROM jobs WHERE runs <> 1 OR attempts <> 1")[0]["n"] == 0
        by_engine = {r["engine_id"]: r["n"] for r in pg.rows(
            "SELECT engine_id, count(*) AS n FROM attempts WHERE status = 'succeeded' GROUP BY engine_id")}
        assert set(by_engine) == {first.engine_id, second.engine_id}, f"one engine ran everything: {by_engine}"
        assert sum(by_engine.values()) == SHARED_JOBS
        for engine in (first, second):
            engine.send(signal.SIGTERM)
        for engine in (first, second):
            assert engine.wait_exit(timeout=20) == 0
        counts = [int(m.group(1)) for e in (first, second) if (m := re.search(r"(\d+) completed", e.log_lines()[-1]))]
        assert sorted(counts) == sorted(by_engine.values())


def _backend_pids(pg: Pg, pid: int) -> list[int]:
    """The server pids of every connection process `pid` holds: its sockets' local ports, as the server sees them."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[9] in inodes:
                    ports.append(int(fields[1].rsplit(":", 1)[1], 16))
    if not ports:
        return []
    return [r["pid"] for r in pg.rows("SELECT pid FROM pg_stat_activity WHERE client_port = ANY(%s) "
                                      "AND client_addr IS NOT NULL", (ports,))]


def test_an_engine_that_loses_its_connections_keeps_its_running_job_and_records_it_after_reconnecting(
        home: Path, work: Path, pg: Pg, engines: Engines) -> None:
    params = conninfo_to_dict(pg.url)
    if str(params.get("host", "")).startswith("/") or not params.get("host"):
        pytest.skip("needs a TCP connection to the server (to find the engine's backends by port)")
    engine = start(engines, pg, workers=1)
    pids = work / "pids"
    enqueue(home, pg, f"echo $$ >> {pids}; {blocking(work, 'held')}; echo finished >> {work}/out", cwd=work,
            id="held")
    pg.wait_states({"held": PROCESSING}, timeout=10)
    (job_pid,) = wait_for_pids(pids, 1)
    before = wait_until(lambda: b if len(b := _backend_pids(pg, engine.pid)) >= 2 else None, timeout=10,
                        what="the engine's pooled and listening connections")
    # An outage of 3 s: every connection the engine has, or makes meanwhile, is terminated by the server.
    killed: set[int] = set()
    outage_end = time.monotonic() + 3.0
    finished_in_outage = False
    while time.monotonic() < outage_end:
        for backend in _backend_pids(pg, engine.pid):
            pg.rows("SELECT pg_terminate_backend(%s)", (backend,))
            killed.add(backend)
        if not (work / "held.go").exists() and time.monotonic() > outage_end - 2.5:
            (work / "held.go").touch()  # the job ends while the engine cannot reach the database
        finished_in_outage = finished_in_outage or lines(work / "out") == ["finished"]
        time.sleep(0.02)
    assert set(before) <= killed
    assert finished_in_outage, "the job should have finished during the outage"
    assert engine.returncode is None, f"the engine exited during the outage:\n{engine.log()}"
    assert process_gone(job_pid)  # it ended by itself, not by the engine
    done = pg.wait_states({"held": COMPLETED}, timeout=40)["held"]  # recorded once the engine reconnects
    assert (done.attempts, done.runs) == (1, 1)
    (only,) = pg.attempts("held")
    assert (only.status, only.engine_id) == (SUCCEEDED, engine.engine_id)
    assert lines(work / "out") == ["finished"]  # ran once, not again
    after = wait_until(lambda: b if len(b := _backend_pids(pg, engine.pid)) >= 2 else None, timeout=20,
                       what="the engine to reconnect (pool and listener)")
    assert not set(after) & killed
    # Claiming resumes: a new job is picked up (through NOTIFY from another process, or the change poll).
    enqueue(home, pg, f"touch {work}/next", cwd=work, id="next")
    pg.wait_states({"next": COMPLETED}, timeout=20)
    assert engine.returncode is None


# ---- leader-only duties: the recovery sweep --------------------------------------------------------------------------

NOW = time.time()


def _spec(job_id: str) -> jobspec.NewJob:
    return jobspec.from_mapping({"id": job_id, "command": "true", "run_at": NOW, "cwd": "/tmp"}, now=NOW)


async def _orphans(store: PostgresStore, n: int) -> list[str]:
    """n jobs claimed by an engine on another host whose heartbeat is 2 minutes old."""
    ids = [f"o{i:03d}" for i in range(n)]
    await store.enqueue([_spec(i) for i in ids], now=NOW)
    await store.register_engine(EngineInfo(id="gone-1-beef", host="elsewhere.example", pid=1, workers=n,
                                           started_at=NOW - 120, heartbeat_at=NOW - 120))
    assert len(await store.claim_due("gone-1-beef", now=NOW, limit=n)) == n
    return ids


async def test_a_recovery_sweep_does_nothing_while_another_engine_holds_the_leader_lock(pg: Pg) -> None:
    store = PostgresStore(pg.url)
    await store.open()
    try:
        ids = await _orphans(store, 3)
        async with await psycopg.AsyncConnection.connect(pg.base_url) as leader:
            async with leader.transaction():  # another engine in the middle of its sweep
                await leader.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (RECOVERY_LOCK, pg.schema))
                async with asyncio.timeout(5):  # not waiting for the lock: giving up at once
                    assert await store.recover(now=NOW + 200, stale_before=NOW + 170, dead_engine_ids=[]) == []
                assert {j.state for j in await store.running()} == {PROCESSING}
                assert [e.id for e in await store.engines()] == ["gone-1-beef"]  # not even the engine row went
            async with leader.transaction():  # the lock of another schema's queue is not ours
                await leader.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                                     (RECOVERY_LOCK, pg.schema + "_other"))
                assert await store.recover(now=NOW + 200, stale_before=NOW + 170, dead_engine_ids=[]) == ids
        assert await store.engines() == []
        assert [a.status for a in await store.attempts(ids[0])] == [INTERRUPTED]
    finally:
        await store.close()


async def test_concurrent_recovery_sweeps_of_eight_engines_recover_every_job_once_in_one_sweep(pg: Pg) -> None:
    stores = [PostgresStore(pg.url) for _ in range(8)]
    for store in stores:
        await store.open()
    try:
        ids = await _orphans(stores[0], 60)
        go = asyncio.Event()

        async def sweep(store: PostgresStore) -> list[str]:
            await go.wait()
            return await store.recover(now=NOW + 200, stale_before=NOW + 170, dead_engine_ids=[])

        tasks = [asyncio.create_task(sweep(s)) for s in stores]
        await asyncio.sleep(0)  # let every task reach go.wait()
        go.set()
        results = await asyncio.gather(*tasks)
        # one sweep did the whole job; the others found the lock taken (or, after it, nothing left). (Without the
        # lock this holds too, the others waiting on the engines row instead: the test above is the lock's.)
        assert sorted(len(r) for r in results) == [0] * 7 + [60], [len(r) for r in results]
        assert sorted(next(r for r in results if r)) == ids
        assert [len(await stores[1].attempts(i)) for i in ids] == [1] * 60  # one interrupted attempt each
        assert {j.state for j in await stores[2].list_jobs(limit=100)} == {PENDING}
    finally:
        for store in stores:
            await store.close()



def test_a_job_that_enqueues_a_follow_up_reaches_the_database_given_by_flag(home: Path, work: Path, pg: Pg) -> None:
    """`queuectl --database-url URL run`: the jobs' own `queuectl` commands use the same database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUECTL_")}
    env["QUEUECTL_HOME"] = str(home)
    follow_up = f"{sys.executable} -m queuectl enqueue --id child -- echo child-ran"
    enqueue(home, pg, follow_up, cwd=work, id="parent")
    ran = subprocess.run([*QUEUECTL, "--database-url", pg.url, "run", "--until-idle"], env=env, capture_output=True,
                         text=True, timeout=60, check=False)
    assert ran.returncode == 0, ran.stderr
    assert {i: j.state for i, j in pg.jobs().items()} == {"parent": COMPLETED, "child": COMPLETED}
