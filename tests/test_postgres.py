"""What only the PostgreSQL store has to show, against the real server of tests/pg.py: migrations raced by
several engines, a newer schema refused, SKIP LOCKED claiming by several store instances, LISTEN/NOTIFY wake-ups
across instances and their reconnection, pooled connections that were cut, and the CLI end to end.

The backend-agnostic behaviour is tests/test_store_contract.py's. Every wait polls under a deadline.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from queuectl import jobspec, paths
from queuectl.engine import Engine, EngineOptions
from queuectl.errors import ConflictError, StoreError
from queuectl.events import EventLog
from queuectl.models import AttemptStatus, JobState, Outcome
from tests.helpers import async_wait_until, proc_argv, proc_env, run_proc
from tests.pg import postgres_url, reserve_schema, skip_unless_reachable, url_with_schema

psycopg = pytest.importorskip("psycopg", reason="PostgreSQL store not available (pip install .[postgres])")
from psycopg import sql  # noqa: E402

from queuectl.store.postgres import PostgresStore, _Listener  # noqa: E402
from queuectl.store.postgres_schema import SCHEMA_VERSION  # noqa: E402

NOW = time.time()


def job(job_id: str, **fields: Any) -> Any:
    return jobspec.from_mapping({"id": job_id, "command": f"echo {job_id}", "run_at": NOW, "cwd": "/tmp", **fields},
                                now=NOW)


@pytest.fixture
def url() -> str:
    found = postgres_url()
    skip_unless_reachable(found)
    return found


@pytest.fixture
def schema(url: str) -> str:
    """A schema name nobody uses yet; the first store opened on it creates it."""
    return reserve_schema(url)


@pytest.fixture
async def stores(url: str, schema: str) -> AsyncIterator[Callable[..., Any]]:
    """open(**kwargs) -> an open PostgresStore on the test's schema; all are closed at the end."""
    opened: list[PostgresStore] = []

    async def open_one(**kwargs: Any) -> PostgresStore:
        store = PostgresStore(kwargs.pop("database_url", url), schema_name=schema, **kwargs)
        await store.open()
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        await store.close()


async def sql_rows(url: str, query: Any, params: Any = None) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(query, params)
        return await cur.fetchall() if cur.description else []


# ---- migrations ----------------------------------------------------------------------------------------------------


async def test_engines_opening_together_migrate_once(url: str, schema: str, stores: Callable[..., Any]) -> None:
    opened = await asyncio.gather(*(stores() for _ in range(8)))
    assert {s.schema_name for s in opened} == {schema}
    versions = await sql_rows(url, sql.SQL("SELECT version FROM {}.schema_version ORDER BY version").format(
        sql.Identifier(schema)))
    assert [v for (v,) in versions] == list(range(1, SCHEMA_VERSION + 1))
    await opened[0].enqueue([job("j1")], now=NOW)
    assert (await opened[7].get("j1")).state == JobState.PENDING


async def test_the_database_refuses_a_job_state_or_attempt_status_queuectl_does_not_know(
    url: str, schema: str, stores: Callable[..., Any]
) -> None:
    store = await stores()
    await store.enqueue([job("a")], now=NOW)
    ident = sql.Identifier(schema)
    await sql_rows(url, sql.SQL("INSERT INTO {}.attempts (job_id, number, status, started_at) "
                                "VALUES ('a', 1, 'failed', 1)").format(ident))
    for statement in ["UPDATE {}.jobs SET state = 'bogus'", "UPDATE {}.attempts SET status = 'bogus'"]:
        with pytest.raises(psycopg.errors.CheckViolation):
            await sql_rows(url, sql.SQL(statement).format(ident))
    for status in AttemptStatus:
        await sql_rows(url, sql.SQL("UPDATE {}.attempts SET status = %s").format(ident), (status.value,))
    for state in JobState:
        await sql_rows(url, sql.SQL("UPDATE {}.jobs SET state = %s").format(ident), (state.value,))


async def test_an_engine_that_cannot_register_fails_cleanly_and_puts_the_child_watcher_back(
    url: str, schema: str, stores: Callable[..., Any], tmp_path: Path
) -> None:
    """A read-only database: registering the engine fails. Before, the engine's child watcher stayed installed for
    the rest of the process. (The settings read asked beside the registration is now awaited too, so that it
    cannot log against the store closed after the failure; here it happens to end first either way.)"""
    await stores()  # the schema, migrated
    read_only_url = url + ("&" if "?" in url else "?") + "options=-c%20default_transaction_read_only%3Don"
    read_only = PostgresStore(read_only_url, schema_name=schema)
    await read_only.open()
    log = io.StringIO()
    try:
        engine = Engine(read_only, EngineOptions(home=tmp_path, workers=1, until_idle=True), EventLog(stream=log))
        with pytest.raises(StoreError, match="read-only"):
            await engine.run(handle_signals=False)
    finally:
        await read_only.close()  # as the CLI does at once
    await asyncio.sleep(0.2)  # what a settings read still going would log, it would have logged by now
    assert "cannot read config" not in log.getvalue(), log.getvalue()
    assert type(asyncio.get_child_watcher()).__name__ != "_SameThreadPidfdWatcher"


async def test_a_schema_named_in_the_url_is_created(url: str, schema: str) -> None:
    store = PostgresStore(url_with_schema(url, schema))
    await store.open()
    try:
        assert store.schema_name == schema
        await store.enqueue([job("j1")], now=NOW)
    finally:
        await store.close()
    rows = await sql_rows(url, sql.SQL("SELECT id FROM {}.jobs").format(sql.Identifier(schema)))
    assert rows == [("j1",)]


async def test_a_newer_schema_is_refused_with_a_clear_message(url: str, schema: str, stores: Callable[..., Any]
                                                              ) -> None:
    await stores()
    await sql_rows(url, sql.SQL("INSERT INTO {}.schema_version VALUES (%s, 0)").format(sql.Identifier(schema)),
                   (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError) as err:
        await stores()
    message = str(err.value)
    assert "newer than this queuectl knows" in message and "upgrade queuectl" in message
    assert f"version {SCHEMA_VERSION + 1}" in message and "\n" not in message


async def test_a_schema_with_someone_elses_tables_is_refused(url: str, schema: str, stores: Callable[..., Any]
                                                             ) -> None:
    ident = sql.Identifier(schema)
    await sql_rows(url, sql.SQL("CREATE SCHEMA {}").format(ident))
    await sql_rows(url, sql.SQL("CREATE TABLE {}.jobs (name text)").format(ident))
    with pytest.raises(StoreError, match=r"already has tables queuectl did not create \(jobs\)"):
        await stores()
    assert await sql_rows(url, sql.SQL("SELECT * FROM {}.jobs").format(ident)) == []  # untouched


async def test_an_unreachable_server_is_one_line_store_error() -> None:
    store = PostgresStore("postgresql://postgres:secret@127.0.0.1:1/test")
    with pytest.raises(StoreError) as err:
        await store.open()
    message = str(err.value)
    assert message.startswith("cannot connect to PostgreSQL postgres@127.0.0.1:1/test")
    assert "\n" not in message and "secret" not in message


# ---- claiming --------------------------------------------------------------------------------------------------------


async def test_four_stores_claiming_at_once_take_every_job_exactly_once(stores: Callable[..., Any]) -> None:
    instances = [await stores() for _ in range(4)]
    await instances[0].enqueue([job(f"j{i:03d}", priority=i % 3) for i in range(500)], now=NOW)

    async def drain(store: PostgresStore, engine_id: str) -> list[str]:
        taken: list[str] = []
        while claims := await store.claim_due(engine_id, now=NOW, limit=3):
            taken += [c.job.id for c in claims]
        return taken

    results = await asyncio.gather(*(drain(s, f"e{n}-{k}") for n, s in enumerate(instances) for k in range(8)))
    ids = [i for taken in results for i in taken]
    assert Counter(ids).most_common(1)[0][1] == 1
    assert len(ids) == 500
    assert sum(1 for taken in results if taken) > 4  # the work really was spread
    counts = await instances[1].counts(now=NOW)
    assert counts.by_state[JobState.PROCESSING] == 500 and counts.by_state[JobState.PENDING] == 0


async def test_a_claim_skips_a_row_another_transaction_holds_instead_of_waiting(
        url: str, schema: str, stores: Callable[..., Any]) -> None:
    store = await stores()
    await store.enqueue([job("held", priority=9), job("free")], now=NOW)
    async with await psycopg.AsyncConnection.connect(url) as conn, conn.transaction():
        await conn.execute(sql.SQL("SELECT 1 FROM {}.jobs WHERE id = 'held' FOR UPDATE").format(
            sql.Identifier(schema)))
        async with asyncio.timeout(5):
            claims = await store.claim_due("e1", now=NOW, limit=5)
        assert [c.job.id for c in claims] == ["free"]
    assert [c.job.id for c in await store.claim_due("e1", now=NOW, limit=5)] == ["held"]


async def test_finishing_and_recovery_write_attempts_like_sqlite(stores: Callable[..., Any]) -> None:
    store = await stores()
    await store.enqueue([job("j1"), job("j2")], now=NOW)
    c1, c2 = await store.claim_due("gone-engine", now=NOW + 1, limit=2)
    done = Outcome(exit_code=0, output_tail="ok\n", log_path="/l/1.log", started_at=NOW + 1, finished_at=NOW + 2)
    assert await store.complete(c1, "gone-engine", done)
    assert await store.recover(now=NOW + 5, stale_before=NOW, dead_engine_ids=[]) == ["j2"]
    [a1] = await store.attempts("j1")
    [a2] = await store.attempts("j2")
    assert (a1.status, a1.output_tail, a1.log_path) == (AttemptStatus.SUCCEEDED, "ok\n", "/l/1.log")
    assert (a2.status, a2.engine_id, a2.error) == (
        AttemptStatus.INTERRUPTED, "gone-engine",
        "interrupted: engine gone-engine stopped (crashed or killed) during the attempt")
    assert await store.complete(c2, "gone-engine", done) is False


# ---- change token and notifications ----------------------------------------------------------------------------------


async def test_change_token_sees_commits_of_another_store_and_ignores_empty_claims(stores: Callable[..., Any]) -> None:
    a, b = await stores(), await stores()
    token = await a.change_token()
    assert await b.claim_due("e", now=NOW, limit=5) == []
    assert await a.change_token() == token  # an empty claim changes nothing
    await b.enqueue([job("j1")], now=NOW)
    after_enqueue = await a.change_token()
    assert after_enqueue != token
    await b.config_set("max-retries", "4")
    assert await a.change_token() != after_enqueue


class Wakes:
    """A subscriber callback that counts calls and lets a test wait for the next one."""

    def __init__(self) -> None:
        self.count = 0
        self.event = asyncio.Event()

    def __call__(self) -> None:
        self.count += 1
        self.event.set()

    async def next(self, timeout_s: float = 5.0) -> float:
        """Seconds until the next wake-up (failing the test after timeout_s)."""
        started = time.monotonic()
        async with asyncio.timeout(timeout_s):
            await self.event.wait()
        self.event.clear()
        return time.monotonic() - started


async def test_notify_wakes_a_subscriber_of_another_store_quickly(url: str, stores: Callable[..., Any]) -> None:
    listener, writer = await stores(), await stores()
    wakes = Wakes()
    await listener.subscribe(wakes)
    await writer.enqueue([job("j1")], now=NOW)  # the enqueue transaction notifies by itself
    assert await wakes.next() < 1.0
    await writer.notify_change()
    assert await wakes.next() < 1.0
    await writer.config_set("max-retries", "2")
    assert await wakes.next() < 1.0
    [claim] = await writer.claim_due("e", now=NOW, limit=1)
    await writer.release(claim, "e", now=NOW, reason="test")  # back to pending: other engines must hear of it
    assert await wakes.next() < 1.0
    # A queue in another schema of the same database has a channel of its own.
    other = PostgresStore(url, schema_name=reserve_schema(url))
    await other.open()
    try:
        await other.enqueue([job("elsewhere")], now=NOW)
        await other.notify_change()
        await writer.notify_change()
        await wakes.next()
        assert wakes.count == 5
    finally:
        await other.close()


async def test_the_listener_reconnects_after_its_connection_is_killed(url: str, stores: Callable[..., Any]) -> None:
    listener, writer = await stores(), await stores()
    wakes = Wakes()
    await listener.subscribe(wakes)
    first_pid = listener.listener_pid
    assert first_pid is not None
    assert await sql_rows(url, "SELECT pg_terminate_backend(%s)", (first_pid,)) == [(True,)]
    await wakes.next()  # the drop itself wakes the engine: notifications may have been lost
    await async_wait_until(lambda: listener.listener_pid not in (None, first_pid), timeout_s=10,
                           what="the listener to reconnect")
    wakes.event.clear()
    await writer.enqueue([job("after")], now=NOW)
    assert await wakes.next() < 1.0


async def test_a_quiet_listener_checks_its_connection_and_keeps_listening(
        url: str, stores: Callable[..., Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_Listener, "check_after_s", 0.05)
    listener, writer = await stores(), await stores()
    wakes = Wakes()
    await listener.subscribe(wakes)
    pid = listener.listener_pid

    async def checked() -> bool:
        rows = await sql_rows(url, "SELECT query FROM pg_stat_activity WHERE pid = %s", (pid,))
        return rows == [("SELECT 1",)]

    await async_wait_until(checked, timeout_s=10, what="the listener's liveness check")
    assert listener.listener_pid == pid and wakes.count == 0
    await writer.notify_change()
    assert await wakes.next() < 1.0


async def test_pooled_connections_cut_by_the_server_are_replaced(url: str, stores: Callable[..., Any]) -> None:
    app = f"queuectl-cut-{os.getpid()}-{time.monotonic_ns()}"
    store = await stores(database_url=f"{url}?application_name={app}")
    await store.enqueue([job("j1")], now=NOW)
    store.idle_check_s = 0.0  # check every connection before use, as after any idle period
    killed = await sql_rows(url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                            (app,))
    assert killed and all(ok for (ok,) in killed)
    assert (await store.get("j1")).id == "j1"  # no error: the dead connection was checked and replaced
    store.idle_check_s = 3600.0  # without the check, one operation fails (in one line); the pool is then checked
    await sql_rows(url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s", (app,))
    with pytest.raises(StoreError, match=r"^lost the connection to PostgreSQL [^\n]*$"):
        await store.get("j1")
    assert (await store.get("j1")).id == "j1"


async def test_an_engine_is_woken_by_notify_alone(tmp_path: Path, stores: Callable[..., Any]) -> None:
    engine_store, client = await stores(), await stores()
    options = EngineOptions(home=tmp_path / "home", workers=2, change_poll_s=60, max_sleep_s=60,
                            recover_interval_s=60, heartbeat_interval_s=60)
    paths.ensure_home(options.home)
    engine = Engine(engine_store, options, EventLog("json", stream=io.StringIO()))
    task = asyncio.create_task(engine.run(handle_signals=False))
    try:
        await async_wait_until(lambda: engine_store.listener_pid, timeout_s=10, what="the engine to listen")
        latencies = []
        for n in range(10):
            enqueued = time.monotonic()
            await client.enqueue([job(f"j{n}", command="true")], now=time.time())

            async def started(n: int = n) -> bool:
                return (await client.get(f"j{n}")).state != JobState.PENDING

            await async_wait_until(started, timeout_s=10, interval_s=0.005, what=f"j{n} to be picked up")
            latencies.append(time.monotonic() - enqueued)
        assert max(latencies) < 2.0, latencies  # without NOTIFY it would wait for its 60 s poll
    finally:
        engine.request_stop()
        await asyncio.wait_for(task, timeout=30)
    assert engine.summary.completed == 10


# ---- the CLI, end to end, engines as processes -----------------------------------------------------------------------


def test_cli_end_to_end_with_two_engine_processes(tmp_path: Path, url: str, schema: str) -> None:
    env = {"QUEUECTL_DATABASE_URL": url_with_schema(url, schema)}
    homes = [tmp_path / "host-a", tmp_path / "host-b"]  # as if on two hosts: nothing shared but the database
    for i in range(3):
        done = run_proc("enqueue", "--id", f"cli{i}", "--", "echo", f"hello {i}", home=homes[0], env=env)
        assert done.code == 0 and done.out.strip() == f"cli{i}", done.err
    lines = [json.dumps({"id": f"batch{i:02d}", "command": f"sleep 0.2; echo {i}", "priority": i % 4})
             for i in range(30)]
    lines.append(json.dumps({"id": "fails", "command": "exit 3", "max_retries": 0}))
    done = run_proc("enqueue", "--file", "-", input="\n".join(lines) + "\n", home=homes[1], env=env)
    assert done.code == 0 and len(done.out.split()) == 31, done.err
    dup = run_proc("enqueue", "--id", "cli0", "--", "true", home=homes[0], env=env)
    assert dup.code == 1 and "already exists" in dup.err and len(dup.err.splitlines()) == 1

    engines = [subprocess.Popen(proc_argv("run", "--workers", "3", "--until-idle", "--log-format", "json"),
                                env=proc_env(home, env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for home in homes]
    outputs = [proc.communicate(timeout=90) for proc in engines]
    for proc, (_out, err) in zip(engines, outputs, strict=True):
        assert proc.returncode == 0, err

    status = run_proc("status", "--json", home=homes[0], env=env)
    assert status.code == 0, status.err
    assert status.json()["counts"] == {"pending": 0, "waiting": 0, "processing": 0, "completed": 33, "failed": 0,
                                       "dead": 1, "cancelled": 0}
    listed = run_proc("list", "--state", "completed", "--limit", "100", "--json", home=homes[1], env=env).json()
    assert sorted(j["id"] for j in listed) == sorted([f"cli{i}" for i in range(3)] + [f"batch{i:02d}"
                                                                                      for i in range(30)])
    started = Counter(json.loads(line)["job"] for _, err in outputs for line in err.splitlines()
                      if '"event": "started"' in line)
    assert len(started) == 34 and set(started.values()) == {1}  # each job ran once, on one engine or the other
    assert all(err.count('"event": "started"') > 0 for _, err in outputs)  # both engines took part
    inspected = run_proc("inspect", "fails", "--json", home=homes[0], env=env)
    assert inspected.code == 0 and inspected.json()["state"] == "dead"


def test_cli_reports_an_unreachable_database_in_one_line(tmp_path: Path) -> None:
    done = run_proc("status", home=tmp_path / "home",
                    env={"QUEUECTL_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/test"})
    assert done.code == 1
    assert done.err.startswith("queuectl: error: cannot connect to PostgreSQL postgres@127.0.0.1:1/test")
    assert len(done.err.splitlines()) == 1


async def test_replace_and_conflicts_roll_back_whole_batches(stores: Callable[..., Any]) -> None:
    store = await stores()
    await store.enqueue([job("a")], now=NOW)
    with pytest.raises(ConflictError, match="'dup' already exists"):
        await store.enqueue([job("dup"), job("b"), job("dup")], now=NOW)  # a duplicate inside the batch
    assert [j.id for j in await store.list_jobs()] == ["a"]
