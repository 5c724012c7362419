"""What only the SQLite store promises: pragmas, file modes, schema versioning, refusing foreign files, and query
plans that keep claiming and counting independent of the table size."""

from __future__ import annotations

import asyncio
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from queuectl import jobspec
from queuectl.api import Queue
from queuectl.errors import StoreError
from queuectl.models import AttemptStatus, JobState
from queuectl.store import open_store, sqlite_ops, sqlite_schema
from queuectl.store.sqlite import SQLiteStore
from tests.helpers import ROOT, proc_env

NOW = time.time()


def new_job(job_id: str, **fields: object) -> object:
    return jobspec.from_mapping({"id": job_id, "command": f"echo {job_id}", "cwd": "/tmp", "run_at": NOW, **fields},
                                now=NOW)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def pragma(path: Path, name: str) -> object:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]
    finally:
        conn.close()


async def opened(path: Path) -> SQLiteStore:
    store = SQLiteStore(path)
    await store.open()
    return store


async def refused(db: Path) -> StoreError:
    """Open must fail with StoreError. Waits (with the loop running) for any connection thread the failed open left
    behind, so that a leftover thread fails test_a_refused_open_leaves_no_connection_thread_behind, not this test."""
    with pytest.raises(StoreError) as err:
        await opened(db)
    for thread in [t for t in threading.enumerate() if "connection_worker" in t.name]:
        await asyncio.to_thread(thread.join, 5)
    return err.value


# ---- pragmas and files -----------------------------------------------------------------------------------------


async def test_database_is_in_wal_mode(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    store = await opened(db)
    await store.close()
    assert pragma(db, "journal_mode") == "wal"


def test_connections_have_a_busy_timeout(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    conn = sqlite_schema.connect(db)
    try:
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 5000
    finally:
        conn.close()


async def test_a_writer_waits_for_the_lock_instead_of_failing(tmp_path: Path) -> None:
    """Another process holds the write lock for a while: enqueue waits on the busy timeout and then succeeds."""
    db = tmp_path / "queue.db"
    store = await opened(db)
    try:
        blocker = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        blocker.execute("BEGIN IMMEDIATE")
        released = threading.Event()

        def release() -> None:
            blocker.execute("COMMIT")
            blocker.close()
            released.set()

        timer = threading.Timer(0.4, release)
        timer.start()
        started = time.monotonic()
        try:
            await store.enqueue([new_job("j1")], now=NOW)  # type: ignore[list-item]
        finally:
            timer.join()
        assert released.is_set()
        assert time.monotonic() - started >= 0.3  # it really waited for the other writer
        assert (await store.get("j1")).state == JobState.PENDING
    finally:
        await store.close()


async def test_home_is_created_0700_and_database_0600(tmp_path: Path) -> None:
    home = tmp_path / "deep" / "home"
    async with Queue(home) as q:
        await q.enqueue([new_job("j1")])  # type: ignore[list-item]
        for extra in ("queue.db-wal", "queue.db-shm"):
            if (home / extra).exists():
                assert mode(home / extra) == 0o600, extra
    assert mode(home) == 0o700
    assert mode(home / "queue.db") == 0o600
    for sub in home.iterdir():
        if sub.is_dir():
            assert mode(sub) == 0o700, sub


async def test_store_alone_creates_the_database_0600(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    store = await opened(db)
    await store.close()
    assert mode(db) == 0o600


def test_open_store_picks_sqlite_in_the_home_or_from_a_sqlite_url(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    assert isinstance(store, SQLiteStore) and store.path == tmp_path / "queue.db"
    other = open_store(tmp_path, f"sqlite://{tmp_path}/other.db")  # sqlite:///abs/path
    assert isinstance(other, SQLiteStore) and other.path == tmp_path / "other.db"


# ---- schema versions -------------------------------------------------------------------------------------------


async def test_migrations_are_applied_at_open_and_recorded_in_user_version(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    store = await opened(db)
    await store.close()
    assert sqlite_schema.SCHEMA_VERSION == len(sqlite_schema.MIGRATIONS) >= 1
    assert pragma(db, "user_version") == sqlite_schema.SCHEMA_VERSION
    conn = sqlite3.connect(db)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    finally:
        conn.close()
    assert {"jobs", "attempts", "config", "engines"} <= tables
    assert "jobs_claim" in indexes


def test_the_database_refuses_a_job_state_or_attempt_status_queuectl_does_not_know(tmp_path: Path) -> None:
    """A hand edit that would leave a row neither `list` nor `status` can read fails instead, saying why; every
    state and status queuectl knows is still accepted."""
    db = tmp_path / "queue.db"
    asyncio.run(_enqueue_one(db))
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("INSERT INTO attempts(job_id, number, status, started_at) VALUES ('a', 1, 'failed', 1)")
        for statement in ["UPDATE jobs SET state = 'bogus'", "UPDATE attempts SET status = 'bogus'",
                          "INSERT INTO jobs(id, command, state, run_at, cwd, created_at, updated_at) "
                          "VALUES ('b', 'true', 'Pending', 1, '/', 1, 1)",
                          "INSERT INTO attempts(job_id, number, status, started_at) VALUES ('a', 2, '', 1)"]:
            with pytest.raises(sqlite3.IntegrityError, match=r"^queuectl: unknown (job state|attempt status)$"):
                conn.execute(statement)
        for state in JobState:
            conn.execute("UPDATE jobs SET state = ?", (state.value,))
        for status in AttemptStatus:
            conn.execute("UPDATE attempts SET status = ?", (status.value,))
        assert conn.execute("SELECT state FROM jobs").fetchall() == [(list(JobState)[-1].value,)]
    finally:
        conn.close()


async def _enqueue_one(db: Path) -> None:
    store = await opened(db)
    try:
        await store.enqueue([new_job("a")], now=NOW)
    finally:
        await store.close()


@pytest.mark.parametrize("old_version", range(1, sqlite_schema.SCHEMA_VERSION))
async def test_an_older_database_is_migrated_at_open_keeping_its_jobs(tmp_path: Path, old_version: int) -> None:
    db = tmp_path / "queue.db"
    conn = sqlite3.connect(db, isolation_level=None)
    for migration in sqlite_schema.MIGRATIONS[:old_version]:
        for statement in migration:
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {old_version}")
    conn.execute("INSERT INTO jobs(id, command, state, run_at, cwd, created_at, updated_at) "
                 "VALUES ('old-job', 'true', 'pending', 1, '/', 1, 1)")
    conn.close()
    store = await opened(db)
    try:
        assert (await store.get("old-job")).command == "true"
        assert (await store.counts(now=NOW)).by_state[JobState.PENDING] == 1
    finally:
        await store.close()
    assert pragma(db, "user_version") == sqlite_schema.SCHEMA_VERSION


async def test_reopening_keeps_the_data(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    store = await opened(db)
    await store.enqueue([new_job("j1")], now=NOW)  # type: ignore[list-item]
    await store.config_set("max-retries", "5")
    await store.close()
    store = await opened(db)
    try:
        assert (await store.get("j1")).id == "j1"
        assert await store.config_items() == {"max-retries": "5"}
    finally:
        await store.close()
    assert pragma(db, "user_version") == sqlite_schema.SCHEMA_VERSION


async def test_two_stores_opening_a_fresh_file_at_once_both_work(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    stores = [SQLiteStore(db) for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        await asyncio.gather(*(s.enqueue([new_job(f"j{n}")], now=NOW) for n, s in enumerate(stores)))  # type: ignore[list-item]
        assert len(await stores[0].list_jobs()) == 4
    finally:
        for s in stores:
            await s.close()
    assert pragma(db, "user_version") == sqlite_schema.SCHEMA_VERSION


def test_eight_connections_opening_a_fresh_file_at_once_all_succeed(tmp_path: Path) -> None:
    """What 8 processes starting on a fresh home do: connect (switching the file to WAL) and migrate, at once.
    A switch to WAL mode under contention can fail with "database is locked" without waiting on the busy timeout,
    so the race is repeated on many fresh files."""
    failures: list[str] = []
    for round_ in range(100):
        db = tmp_path / f"fresh-{round_}.db"
        barrier = threading.Barrier(8)

        def open_it(db: Path = db, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            try:
                conn = sqlite_schema.connect(db)
                try:
                    sqlite_schema.migrate(conn, db)
                finally:
                    conn.close()
            except Exception as exc:
                failures.append(repr(exc))

        threads = [threading.Thread(target=open_it) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert pragma(db, "user_version") == sqlite_schema.SCHEMA_VERSION
    assert failures == [], f"{len(failures)} of 800 opens failed, e.g. {failures[0]}"


async def test_a_database_from_a_newer_queuectl_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    store = await opened(db)
    await store.enqueue([new_job("j1")], now=NOW)  # type: ignore[list-item]
    await store.close()
    newer = sqlite_schema.SCHEMA_VERSION + 1
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {newer}")
    conn.close()
    message = str(await refused(db))
    assert "newer" in message and str(newer) in message and str(db) in message
    assert "\n" not in message
    assert pragma(db, "user_version") == newer  # not "migrated" down


async def test_a_file_that_is_not_sqlite_is_refused_and_left_alone(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    content = b"these are my notes, not a database\n" * 200
    db.write_bytes(content)
    err = await refused(db)
    assert str(db) in str(err) and "\n" not in str(err)
    assert db.read_bytes() == content


async def test_an_empty_file_becomes_a_fresh_queue(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    db.touch()
    store = await opened(db)
    try:
        assert await store.list_jobs() == []
    finally:
        await store.close()
    assert pragma(db, "user_version") == sqlite_schema.SCHEMA_VERSION


async def test_a_sqlite_database_that_is_not_queuectls_is_refused_and_left_alone(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE invoices (n INTEGER)")
    conn.execute("INSERT INTO invoices VALUES (1), (2)")
    conn.commit()
    conn.close()
    err = await refused(db)
    assert "not a queuectl" in str(err) and str(db) in str(err)
    conn = sqlite3.connect(db)
    try:
        assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master")] == ["invoices"]
        assert conn.execute("SELECT count(*) FROM invoices").fetchone()[0] == 2
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 0
        # Refusing must not convert someone else's database to WAL mode either.
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    finally:
        conn.close()


def _refuse(db: Path) -> list[threading.Thread]:
    """Open a store that must be refused, in a loop of its own; return the store's connection threads still alive
    right after open() raised, and close the loop at once (as a CLI process ends right after its error)."""

    async def attempt() -> list[threading.Thread]:
        with pytest.raises(StoreError):
            await SQLiteStore(db).open()
        return [t for t in threading.enumerate() if "connection_worker" in t.name and t.is_alive()]

    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(attempt())
    finally:
        loop.close()


@pytest.mark.parametrize("kind", ["not-sqlite", "foreign", "newer"])
def test_a_refused_open_leaves_no_connection_thread_behind(tmp_path: Path, kind: str) -> None:
    """A thread left running after open() raised posts its result to an event loop that the CLI has closed by then:
    "RuntimeError: Event loop is closed" and a traceback on stderr after the one-line error."""
    db = tmp_path / "queue.db"
    if kind == "not-sqlite":
        db.write_bytes(b"not a database" * 100)
    else:
        conn = sqlite3.connect(db)
        if kind == "foreign":
            conn.execute("CREATE TABLE other (x)")
        else:
            conn.execute(f"PRAGMA user_version = {sqlite_schema.SCHEMA_VERSION + 1}")
        conn.commit()
        conn.close()
    failures: list[BaseException | None] = []
    old_hook = threading.excepthook
    threading.excepthook = lambda args: failures.append(args.exc_value)
    try:
        leftovers = [thread for _ in range(3) for thread in _refuse(db)]
        for thread in leftovers:
            thread.join(5)
    finally:
        threading.excepthook = old_hook
    assert failures == []
    assert leftovers == [], f"{len(leftovers)} connection thread(s) still running after open() raised"


async def test_using_a_closed_store_is_a_store_error(tmp_path: Path) -> None:
    store = await opened(tmp_path / "queue.db")
    await store.close()
    with pytest.raises(StoreError):
        await store.list_jobs()


# ---- query plans ---------------------------------------------------------------------------------------------------


def _plans(conn: sqlite3.Connection, run: object) -> dict[str, list[str]]:
    """Run `run()` with a trace on the connection; EXPLAIN QUERY PLAN each statement it ran (bound values inlined)."""
    seen: list[str] = []
    conn.set_trace_callback(seen.append)
    try:
        run()  # type: ignore[operator]
    finally:
        conn.set_trace_callback(None)
    plans: dict[str, list[str]] = {}
    for sql in dict.fromkeys(seen):
        if sql.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE", "WITH")):
            plans[sql] = [str(row[3]) for row in conn.execute("EXPLAIN QUERY PLAN " + sql)]
    return plans


@pytest.fixture
def big_queue(tmp_path: Path) -> sqlite3.Connection:
    """A connection opened the way the store opens one, over 3,000 jobs in every state."""
    db = tmp_path / "queue.db"
    conn = sqlite_schema.connect(db)
    sqlite_schema.migrate(conn, db)
    rows = [(f"j{i}", "true", "completed" if i % 3 else "pending", i % 5, NOW - i, "/", NOW, NOW) for i in range(3000)]
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO jobs(id, command, state, priority, run_at, cwd, created_at, updated_at) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    return conn


def _assert_no_table_scan(plans: dict[str, list[str]]) -> None:
    for sql, plan in plans.items():
        for step in plan:
            if step.startswith("SCAN jobs"):
                assert "USING INDEX" in step or "USING COVERING INDEX" in step, (sql, plan)
            assert "TEMP B-TREE" not in step, (sql, plan)


def test_claim_walks_the_jobs_claim_index_without_a_scan_or_sort(big_queue: sqlite3.Connection) -> None:
    claimed: list[object] = []
    plans = _plans(big_queue, lambda: claimed.extend(sqlite_ops.claim(big_queue, "e1", NOW, 4)))
    assert len(claimed) == 4
    claim_plans = {sql: plan for sql, plan in plans.items() if "processing" in sql}
    assert claim_plans, plans
    assert any("jobs_claim" in step for plan in claim_plans.values() for step in plan), claim_plans
    _assert_no_table_scan(plans)


def test_counting_reads_counters_not_the_jobs_table(big_queue: sqlite3.Connection) -> None:
    got: list[object] = []
    plans = _plans(big_queue, lambda: got.append(sqlite_ops.counts(big_queue, NOW)))
    counts = got[0]
    assert counts.by_state[JobState.PENDING] == 1000 and counts.by_state[JobState.COMPLETED] == 2000  # type: ignore[attr-defined]
    _assert_no_table_scan(plans)


def test_next_due_uses_an_index_without_a_scan_or_sort(big_queue: sqlite3.Connection) -> None:
    got: list[object] = []
    plans = _plans(big_queue, lambda: got.extend(sqlite_ops.next_due(big_queue, 10)))
    assert len(got) == 10
    _assert_no_table_scan(plans)


# ---- two real processes claiming from one file ---------------------------------------------------------------------

_CLAIMER = textwrap.dedent(
    """
    import asyncio, sys, time
    from pathlib import Path
    from queuectl.store.sqlite import SQLiteStore

    async def main():
        store = SQLiteStore(Path(sys.argv[1]))
        await store.open()
        print("ready", flush=True)
        sys.stdin.readline()  # start together with the other claimer
        try:
            while True:
                claims = await store.claim_due(sys.argv[2], now=time.time() + 10, limit=3)
                if not claims:
                    return
                for c in claims:
                    print(c.job.id, flush=True)
        finally:
            await store.close()

    asyncio.run(main())
    """
)


def test_two_processes_claiming_from_one_file_never_share_a_job(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"

    async def fill() -> None:
        async with SQLiteStore(db) as store:
            await store.enqueue([new_job(f"j{i:04d}") for i in range(900)], now=NOW)  # type: ignore[misc]

    async def holders() -> Counter[str | None]:
        async with SQLiteStore(db) as store:
            return Counter(j.engine_id for j in await store.running())

    asyncio.run(fill())
    procs = [
        subprocess.Popen([sys.executable, "-c", _CLAIMER, str(db), name], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=proc_env(None), cwd=ROOT)
        for name in ("A", "B")
    ]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
    finally:
        outputs = [p.communicate(timeout=60) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
    ids = [line for out, _ in outputs for line in out.split()]
    assert len(ids) == 900
    assert not [i for i, n in Counter(ids).items() if n > 1]
    assert asyncio.run(holders()) == {"A": len(outputs[0][0].split()), "B": len(outputs[1][0].split())}
