"""The PostgreSQL store: the same operations as the SQLite store, for engines on many hosts sharing one queue.

psycopg 3 with a psycopg_pool connection pool; every operation is one statement (autocommit) or one explicit
transaction on one pooled connection. Claiming is one UPDATE over a `FOR UPDATE SKIP LOCKED` pick, so engines
never wait for, nor take, each other's jobs. Wake-ups: triggers NOTIFY at commit when a job becomes pending or
the config changes; `subscribe` LISTENs on a dedicated connection that reconnects with backoff. Schema,
migrations and error messages: postgres_schema. Queues, dependencies, cancellation, cron entries: postgres_sched.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
import time
import weakref
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from typing import TYPE_CHECKING, Self

import psycopg
from psycopg import sql
from psycopg.abc import Params
from psycopg.conninfo import make_conninfo
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool, PoolClosed, PoolTimeout

from queuectl.errors import ConflictError, NotFoundError, StoreError
from queuectl.jobspec import NewJob
from queuectl.models import TERMINAL_STATES, Attempt, AttemptStatus, Claim, Counts, EngineInfo, Job, JobState, Outcome
from queuectl.store import postgres_sched as sched
from queuectl.store import postgres_schema as schema
from queuectl.store.postgres_sched import PostgresSched, lock_states
from queuectl.store.postgres_schema import Query

if TYPE_CHECKING:
    from queuectl.stats import StatsRow

Conn = psycopg.AsyncConnection[DictRow]

# The pool reports failed reconnections as WARNING records; without a handler Python would print them on stderr
# next to our own one-line error. Applications that configure logging still get them.
logging.getLogger("psycopg.pool").addHandler(logging.NullHandler())

#: Schemas made by for_tests start with this.
TEST_SCHEMA_PREFIX = "queuectl_test_"
_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}\Z")  # \Z: $ lets a final newline in


class PostgresStore(PostgresSched):
    """A queue in a PostgreSQL schema, shared by any number of engines on any number of hosts."""

    #: Seconds an operation waits for a pooled connection before failing (the pool reconnects meanwhile).
    acquire_timeout_s = 15.0
    #: A pooled connection idle for longer is checked before use (it may have been cut meanwhile).
    idle_check_s = 2.0

    def __init__(self, database_url: str, *, schema_name: str | None = None, max_connections: int = 10) -> None:
        """`schema_name` (default: the URL's search_path, usually public) holds queuectl's tables."""
        if schema_name is not None and not _SCHEMA_NAME.match(schema_name):
            raise StoreError(f"invalid PostgreSQL schema name {schema_name!r}")
        self.url = database_url
        self.where = schema.describe(database_url)
        self.schema_name = schema_name
        self.max_connections = max_connections
        self._conninfo = schema.conninfo(database_url)
        self._pool: AsyncConnectionPool[Conn] | None = None
        self._channel = ""
        self._last_used: weakref.WeakKeyDictionary[Conn, float] = weakref.WeakKeyDictionary()
        self._listener: _Listener | None = None

    @classmethod
    async def for_tests(cls, url: str) -> Self:
        """A store on a new, empty schema of its own, so tests never see each other's jobs. The schema outlives
        close() (a test may reopen the store); test schemas older than a day are dropped here, and tests/pg.py
        drops its own at exit."""
        name = f"{TEST_SCHEMA_PREFIX}{int(time.time())}_{secrets.token_hex(4)}"
        store = cls(url)
        async with await store._connect() as conn:
            cur = await conn.execute("SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %s)",
                                     (TEST_SCHEMA_PREFIX,))
            for row in await cur.fetchall():
                created = row["nspname"].removeprefix(TEST_SCHEMA_PREFIX).partition("_")[0]
                if created.isdigit() and int(created) < time.time() - 86400:
                    with contextlib.suppress(psycopg.Error):
                        await conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                            sql.Identifier(row["nspname"])))
            await conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
        store.schema_name = name
        return store

    # ---- connections ---------------------------------------------------------------------------------------------

    async def _connect(self, *, application_name: str | None = None) -> Conn:
        """A connection of our own (not pooled), autocommit, on our schema once it is known."""
        info = self._conninfo
        if application_name is not None:
            info = make_conninfo(info, application_name=application_name)
        try:
            conn = await psycopg.AsyncConnection.connect(info, autocommit=True, row_factory=dict_row)
        except psycopg.Error as exc:
            raise schema.store_error(exc, self.where, connecting=True) from None
        except OSError as exc:  # name resolution and the like, before libpq gets to say it
            raise StoreError(f"cannot connect to PostgreSQL {self.where}: {schema.one_line(exc)}") from None
        if self.schema_name is not None:
            try:
                await self._configure(conn)
            except BaseException:
                await conn.close()
                raise
        return conn

    async def _configure(self, conn: Conn) -> None:
        assert self.schema_name is not None
        await conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema_name)))

    async def _check(self, conn: Conn) -> None:
        if time.monotonic() - self._last_used.get(conn, 0.0) > self.idle_check_s:
            await AsyncConnectionPool.check_connection(conn)

    async def _returned(self, conn: Conn) -> None:
        self._last_used[conn] = time.monotonic()

    async def open(self) -> None:
        if self._pool is not None:
            return
        conn = await self._connect()
        try:
            self.schema_name = await schema.migrate(conn, self.where, time.time())
        except psycopg.Error as exc:
            raise schema.store_error(exc, self.where) from None
        finally:
            await conn.close()
        self._channel = schema.channel_for(self.schema_name)
        pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            self._conninfo, connection_class=Conn, kwargs={"autocommit": True, "row_factory": dict_row},
            min_size=1, max_size=self.max_connections, open=False, configure=self._configure, check=self._check,
            reset=self._returned, timeout=self.acquire_timeout_s, name=f"queuectl-{self.schema_name}")
        await pool.open()
        self._pool = pool

    async def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.stop()
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    @contextlib.asynccontextmanager
    async def _conn(self) -> AsyncIterator[Conn]:
        pool = self._pool
        if pool is None:
            raise StoreError("store is not open")
        try:
            async with pool.connection() as conn:
                yield conn
        except PoolTimeout:
            raise await self._unavailable() from None
        except PoolClosed:
            raise StoreError("store is closed") from None
        except psycopg.Error as exc:
            if isinstance(exc, psycopg.OperationalError):
                # The server restarted or the network dropped: the idle connections are most likely dead too.
                # Replace them now, so that the retry gets a live one instead of failing once per connection.
                with contextlib.suppress(psycopg.Error, TimeoutError):
                    await asyncio.wait_for(pool.check(), timeout=5.0)
            raise schema.store_error(exc, self.where) from None

    async def _unavailable(self) -> StoreError:
        """Why no pooled connection came: the server's own answer to a fresh connection, if it refuses one."""
        try:
            conn = await self._connect()
        except StoreError as exc:
            return exc
        await conn.close()
        return StoreError(f"no free connection to PostgreSQL {self.where} within {self.acquire_timeout_s:g} s "
                          f"({self.max_connections} in use)")

    async def _rows(self, query: Query, params: Params | None = None) -> list[DictRow]:
        async with self._conn() as conn:
            cur = await conn.execute(query, params)
            return await cur.fetchall()

    async def _exec(self, query: Query, params: Params | None = None) -> int:
        async with self._conn() as conn:
            cur = await conn.execute(query, params)
            return cur.rowcount

    # ---- jobs: writing -------------------------------------------------------------------------------------------

    async def enqueue(
        self, jobs: Sequence[NewJob], *, now: float, replace: bool = False, if_exists: str = "error"
    ) -> list[str]:
        async with self._conn() as conn:
            return await sched.enqueue(conn, jobs, now, replace, if_exists)

    async def claim_due(
        self, engine_id: str, *, now: float, limit: int, queues: Collection[str] | None = None
    ) -> list[Claim]:
        if limit < 1:
            return []
        rows: list[DictRow] = []
        restricted = False
        if queues is None:  # the common case: one statement, unless some queue is paused or limited
            rows = await self._rows(schema.CLAIM, {"engine": engine_id, "now": now, "limit": limit})
            restricted = any(r["q_restricted"] for r in rows)
            rows = [r for r in rows if r["seq"] is not None]
        if queues is not None or restricted:
            async with self._conn() as conn:
                rows = await sched.claim_restricted(conn, engine_id, now, limit, queues)
        claims = [Claim(job=Job.from_row(r), attempt=r["runs"]) for r in rows]
        claims.sort(key=lambda c: (-c.job.priority, c.job.run_at, c.job.seq))
        return claims

    async def complete(self, claim: Claim, engine_id: str, outcome: Outcome) -> bool:
        return await self._finish(claim, engine_id, outcome, JobState.COMPLETED, None)

    async def schedule_retry(self, claim: Claim, engine_id: str, outcome: Outcome, *, retry_at: float) -> bool:
        return await self._finish(claim, engine_id, outcome, JobState.FAILED, retry_at)

    async def bury(self, claim: Claim, engine_id: str, outcome: Outcome) -> bool:
        return await self._finish(claim, engine_id, outcome, JobState.DEAD, None)

    async def bury_cancelled(self, claim: Claim, engine_id: str, outcome: Outcome) -> bool:
        return await self._finish(claim, engine_id, outcome, JobState.CANCELLED, None)

    async def _finish(
        self, claim: Claim, engine_id: str, outcome: Outcome, state: JobState, run_at: float | None
    ) -> bool:
        status = AttemptStatus.SUCCEEDED if outcome.succeeded else (
            AttemptStatus.CANCELLED if state == JobState.CANCELLED else
            AttemptStatus.TIMED_OUT if outcome.timed_out else AttemptStatus.FAILED)
        async with self._conn() as conn, conn.transaction():
            cur = await conn.execute(schema.FINISH, {
                "state": state.value, "run_at": run_at, "ended": outcome.finished_at,
                "finished_at": outcome.finished_at if state in TERMINAL_STATES else None,
                "exit_code": outcome.exit_code, "error": outcome.error, "seq": claim.job.seq, "engine": engine_id,
                "attempt": claim.attempt, "status": status.value, "started": outcome.started_at,
                "timed_out": outcome.timed_out, "tail": outcome.output_tail, "log_path": outcome.log_path,
            })
            row = await cur.fetchone()
            if row is None:
                return False
            # A later statement of the same transaction: it sees dependants enqueued before our row lock.
            await sched.follow_end(conn, row["id"], row["state"], outcome.finished_at)
        return True

    async def release(
        self, claim: Claim, engine_id: str, *, now: float, reason: str, run_at: float | None = None
    ) -> bool:
        started = claim.job.started_at if claim.job.started_at is not None else now
        async with self._conn() as conn, conn.transaction():
            cur = await conn.execute(schema.RELEASE, {"now": now, "seq": claim.job.seq, "engine": engine_id,
                                                      "run_at": now if run_at is None else run_at,
                                                      "attempt": claim.attempt, "started": started, "reason": reason})
            row = await cur.fetchone()
            if row is None:
                return False
            await sched.follow_end(conn, row["id"], row["state"], now)  # cancelled if `queuectl cancel` asked
        return True

    async def retry_dead(self, job_ids: Sequence[str] | None, *, now: float) -> list[str]:
        sets = ("state = 'pending', attempts = 0, run_at = %(now)s, updated_at = %(now)s, finished_at = NULL, "
                "cancel_requested = false")
        async with self._conn() as conn:
            try:
                async with conn.transaction():
                    if job_ids is None:
                        cur = await conn.execute(f"UPDATE jobs SET {sets} WHERE state = 'dead' RETURNING seq, id",
                                                 {"now": now})
                        ids = [r["id"] for r in sorted(await cur.fetchall(), key=lambda r: r["seq"])]
                    else:
                        ids = list(job_ids)
                        _check_ids(ids, await lock_states(conn, ids), lambda s: s == JobState.DEAD,
                                   "retried from the dead-letter queue")
                        await conn.execute(f"UPDATE jobs SET {sets} WHERE id = ANY(%(ids)s)", {"now": now, "ids": ids})
                    await sched.revive_dependants(conn, ids, now)
            except psycopg.errors.UniqueViolation:  # jobs_unique: a newer active job took the key meanwhile
                raise ConflictError("cannot retry: a job with the same unique key is active now") from None
        return ids

    async def delete(self, job_ids: Sequence[str]) -> dict[str, int]:
        ids = list(job_ids)
        async with self._conn() as conn, conn.transaction():
            _check_ids(ids, await lock_states(conn, ids), lambda s: s != JobState.PROCESSING, "deleted while it runs")
            waiting = await sched.waiting_dependant(conn, ids)
            if waiting is not None:
                raise ConflictError(f"job {waiting[0]!r} cannot be deleted: job {waiting[1]!r} runs after it "
                                    "(cancel or delete that one first)")
            cur = await conn.execute("DELETE FROM jobs WHERE id = ANY(%s) RETURNING id, runs", (ids,))
            runs = {row["id"]: row["runs"] for row in await cur.fetchall()}
        return {job_id: runs[job_id] for job_id in ids}

    async def purge(
        self, state: JobState, *, finished_before: float | None, limit: int | None = None
    ) -> dict[str, int]:
        cond = "state = %(state)s" + ("" if finished_before is None else
                                      " AND coalesce(finished_at, updated_at) < %(before)s")
        params = {"state": state.value, "before": finished_before, "limit": limit}
        if limit is None:
            rows = await self._rows(f"DELETE FROM jobs WHERE {cond} RETURNING seq, id, runs", params)
        else:  # a bounded batch, oldest first; engines sweeping at once skip each other's rows
            rows = await self._rows(
                f"""DELETE FROM jobs WHERE seq IN (SELECT seq FROM jobs WHERE {cond} ORDER BY seq LIMIT %(limit)s
                    FOR UPDATE SKIP LOCKED) RETURNING seq, id, runs""", params)
        return {r["id"]: r["runs"] for r in sorted(rows, key=lambda r: r["seq"])}

    # ---- jobs: reading -------------------------------------------------------------------------------------------

    async def get(self, job_id: str) -> Job:
        rows = await self._rows("SELECT * FROM jobs WHERE id = %s", (job_id,))
        if not rows:
            raise NotFoundError(f"no job {job_id!r}")
        return Job.from_row(rows[0])

    async def list_jobs(
        self, *, state: JobState | None = None, limit: int = 50, offset: int = 0, oldest_first: bool = False,
        queue: str | None = None, tag: str | None = None,
    ) -> list[Job]:
        where: list[str] = []
        params: dict[str, object] = {"limit": limit, "offset": offset}
        if state is not None:
            where.append("state = %(state)s")
            params["state"] = JobState(state).value
        if queue is not None:
            where.append("queue = %(queue)s")
            params["queue"] = queue
        if tag is not None:
            where.append("tags @> %(tag)s::jsonb")  # the jobs_tags index
            params["tag"] = json.dumps([tag])
        query = "SELECT * FROM jobs" + (" WHERE " + " AND ".join(where) if where else "")
        query += f" ORDER BY seq {'ASC' if oldest_first else 'DESC'} LIMIT %(limit)s OFFSET %(offset)s"
        return [Job.from_row(r) for r in await self._rows(query, params)]

    async def attempts(self, job_id: str) -> list[Attempt]:
        rows = await self._rows("SELECT * FROM attempts WHERE job_id = %s ORDER BY number", (job_id,))
        return [Attempt.from_row(r) for r in rows]

    async def counts(self, *, now: float) -> Counts:
        row = (await self._rows(schema.COUNTS))[0]
        oldest = row["oldest_run_at"]
        age = now - oldest if oldest is not None and oldest <= now else None
        return Counts(by_state={JobState(s): int(row[s] or 0) for s in schema.STATES}, oldest_pending_age_s=age)

    async def next_due(self, *, limit: int) -> list[tuple[float, str]]:
        rows = await self._rows(f"SELECT run_at, id FROM jobs WHERE {schema.RUNNABLE} ORDER BY run_at, seq LIMIT %s",
                                (limit,))
        return [(float(r["run_at"]), str(r["id"])) for r in rows]

    async def change_token(self) -> int:
        rows = await self._rows("SELECT sum(changes)::bigint AS token FROM counters")
        return int(rows[0]["token"] or 0)

    async def subscribe(self, on_change: Callable[[], None]) -> None:
        if self._pool is None:
            raise StoreError("store is not open")
        if self._listener is None:
            self._listener = _Listener(self, self._channel)
            self._listener.callbacks.append(on_change)
            await self._listener.start()
        else:
            self._listener.callbacks.append(on_change)

    async def notify_change(self) -> None:
        await self._exec("SELECT pg_notify(%s, '')", (self._channel,))

    @property
    def listener_pid(self) -> int | None:
        """Backend pid of the LISTEN connection while it is up (for tests and diagnostics)."""
        return None if self._listener is None else self._listener.pid

    # ---- config --------------------------------------------------------------------------------------------------

    async def config_items(self) -> dict[str, str]:
        return {r["key"]: r["value"] for r in await self._rows("SELECT key, value FROM config")}

    async def config_set(self, key: str, value: str) -> None:
        await self._exec("INSERT INTO config (key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE "
                         "SET value = EXCLUDED.value", (key, value))

    async def config_unset(self, key: str) -> bool:
        return await self._exec("DELETE FROM config WHERE key = %s", (key,)) > 0

    # ---- engines -------------------------------------------------------------------------------------------------

    async def register_engine(self, engine: EngineInfo) -> None:
        e = engine
        await self._exec(
            """INSERT INTO engines (id, host, pid, workers, started_at, heartbeat_at, stop_requested)
               VALUES (%s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (id) DO UPDATE SET host = EXCLUDED.host, pid = EXCLUDED.pid, workers = EXCLUDED.workers,
                  started_at = EXCLUDED.started_at, heartbeat_at = EXCLUDED.heartbeat_at,
                  stop_requested = EXCLUDED.stop_requested""",
            (e.id, e.host, e.pid, e.workers, e.started_at, e.heartbeat_at, e.stop_requested))

    async def heartbeat(self, engine_id: str, *, now: float) -> bool | None:
        rows = await self._rows("UPDATE engines SET heartbeat_at = %s WHERE id = %s RETURNING stop_requested",
                                (now, engine_id))
        return None if not rows else bool(rows[0]["stop_requested"])

    async def deregister_engine(self, engine_id: str) -> None:
        await self._exec("DELETE FROM engines WHERE id = %s", (engine_id,))

    async def engines(self) -> list[EngineInfo]:
        return [EngineInfo.from_row(r) for r in await self._rows("SELECT * FROM engines ORDER BY started_at")]

    async def request_stop(self, engine_ids: Collection[str]) -> None:
        await self._exec("UPDATE engines SET stop_requested = true WHERE id = ANY(%s)", (list(engine_ids),))

    async def running(self) -> list[Job]:
        rows = await self._rows("SELECT * FROM jobs WHERE state = 'processing' ORDER BY started_at")
        return [Job.from_row(r) for r in rows]

    async def recover(self, *, now: float, stale_before: float, dead_engine_ids: Collection[str]) -> list[str]:
        # A leader-only duty: every engine sweeps every 10 s, but only the one whose transaction gets the
        # schema's recovery lock does the work; the others return [] at once instead of queueing up behind it
        # (the next sweep, on whichever engine, finds anything left). The lock is transaction-scoped, so an
        # engine that dies or loses its connection mid-sweep frees it with its rolled-back transaction: there is
        # no leader row to expire. SQLite needs no such lock: its writers are serialised already.
        async with self._conn() as conn, conn.transaction():
            cur = await conn.execute("SELECT pg_try_advisory_xact_lock(%s, hashtext(%s)) AS leader",
                                     (schema.RECOVERY_LOCK, self.schema_name))
            row = await cur.fetchone()
            if row is None or not row["leader"]:
                return []
            cur = await conn.execute(schema.RECOVER, {"now": now, "stale": stale_before,
                                                      "dead": list(dead_engine_ids)})
            rows = await cur.fetchall()
            for r in rows:
                if r["cancel_requested"]:  # `queuectl cancel` asked: it ends cancelled, its dependants with it
                    await sched.cancel_dependants(conn, r["id"], JobState.CANCELLED, now)
            return [r["id"] for r in rows]

    # ---- watching ------------------------------------------------------------------------------------------------

    async def stats(
        self, *, since: float, until: float, samples: int = 0, bucket_s: float | None = None, top: int = 0
    ) -> StatsRow:
        from queuectl.stats import FailureRow, StatsRow, fold_series

        window = {"since": since, "until": until}
        async with self._conn() as conn, conn.transaction():
            # One snapshot for every statement (engines keep writing meanwhile), as SQLite's read transaction.
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            by_status: dict[str, int] = {}
            run_sum, run_max = 0.0, None
            for r in await (await conn.execute(schema.STATS_BY_STATUS, window)).fetchall():
                by_status[r["status"]] = int(r["n"])
                if r["status"] != "interrupted":
                    run_sum += float(r["total"] or 0.0)
                    if r["longest"] is not None:
                        run_max = max(float(r["longest"]), run_max or 0.0)
            row = await (await conn.execute(schema.STATS_BURIED, window)).fetchone()
            buried = int(row["n"]) if row is not None else 0
            run_samples: list[float] = []
            wait_samples: list[float] = []
            if samples > 0:
                params = {**window, "samples": samples}
                run_samples = [float(r["v"]) for r in
                               await (await conn.execute(schema.STATS_RUN_SAMPLES, params)).fetchall()]
                wait_samples = [float(r["v"]) for r in
                                await (await conn.execute(schema.STATS_WAIT_SAMPLES, params)).fetchall()]
            top_failing: list[tuple[str, int]] = []
            recent: list[FailureRow] = []
            if top > 0:
                params = {**window, "top": top}
                top_failing = [(str(r["command"]), int(r["n"])) for r in
                               await (await conn.execute(schema.STATS_TOP_FAILING, params)).fetchall()]
                recent = [
                    FailureRow(job_id=r["job_id"], attempt=int(r["number"]), finished_at=float(r["finished_at"]),
                               status=r["status"], exit_code=r["exit_code"], error=r["error"], command=r["command"])
                    for r in await (await conn.execute(schema.STATS_RECENT_FAILURES, params)).fetchall()
                ]
            series: list[tuple[float, int, int]] = []
            if bucket_s is not None and bucket_s > 0:
                rows = await (await conn.execute(schema.STATS_SERIES, {**window, "bucket_s": bucket_s})).fetchall()
                series = fold_series(((r["k"], r["status"], r["n"]) for r in rows), since=since, bucket_s=bucket_s)
        return StatsRow(since=since, until=until, attempts=by_status, buried=buried, run_sum_s=run_sum,
                        run_max_s=run_max, run_samples=run_samples, wait_samples=wait_samples,
                        top_failing=top_failing, recent_failures=recent, series=series)

    async def search_jobs(
        self, *, text: str | None = None, state: JobState | None = None, below_seq: int | None = None,
        above_seq: int | None = None, limit: int = 50, newest_first: bool = True,
    ) -> list[Job]:
        where: list[str] = []
        params: dict[str, object] = {"limit": limit}
        if state is not None:
            where.append("state = %(state)s")
            params["state"] = JobState(state).value
        if below_seq is not None:
            where.append("seq < %(below)s")
            params["below"] = below_seq
        if above_seq is not None:
            where.append("seq > %(above)s")
            params["above"] = above_seq
        if text:
            # Case-sensitive, no pattern characters: what SQLite's instr() does.
            where.append("(starts_with(id, %(text)s) OR strpos(command, %(text)s) > 0)")
            params["text"] = text
        query = "SELECT * FROM jobs"
        if where:
            query += " WHERE " + " AND ".join(where)
        query += f" ORDER BY seq {'DESC' if newest_first else 'ASC'} LIMIT %(limit)s"
        return [Job.from_row(r) for r in await self._rows(query, params)]


def _check_ids(ids: Sequence[str], states: dict[str, str], allowed: Callable[[str], bool], verb: str) -> None:
    for job_id in ids:
        if job_id not in states:
            raise NotFoundError(f"no job {job_id!r}")
        if not allowed(states[job_id]):
            raise ConflictError(f"job {job_id!r} is {states[job_id]} and cannot be {verb}")


class _Listener:
    """LISTEN on a dedicated connection; call every callback for each notification. When the connection drops,
    call them once (notifications may have been lost), then reconnect with backoff."""

    #: Without a notification for this long, check that the connection still answers (a silent network loss).
    check_after_s = 30.0
    min_backoff_s = 0.1
    max_backoff_s = 5.0

    def __init__(self, store: PostgresStore, channel: str) -> None:
        self.store = store
        self.channel = channel
        self.callbacks: list[Callable[[], None]] = []
        self.pid: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._backoff_s = self.min_backoff_s

    async def start(self) -> None:
        """Begin listening; wait (boundedly) for the first LISTEN so that changes from now on are seen."""
        self._task = asyncio.create_task(self._run(), name="postgres-listen")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), timeout=15.0)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def _fire(self) -> None:
        for callback in self.callbacks:
            callback()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(Exception):  # any failure means: reconnect (a bug must not end wake-ups)
                await self._listen()
            was_up, self.pid = self.pid is not None, None
            self._ready.set()  # up or not, stop holding up subscribe()
            if was_up:
                self._fire()  # notifications may be lost while we are away: look now, and after reconnecting
            await asyncio.sleep(self._backoff_s)
            self._backoff_s = min(self._backoff_s * 2, self.max_backoff_s)

    async def _listen(self) -> None:
        conn = await self.store._connect(application_name="queuectl-listen")
        try:
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
            self.pid = conn.info.backend_pid
            self._backoff_s = self.min_backoff_s
            if self._ready.is_set():
                self._fire()  # a reconnection: what changed while we were away?
            self._ready.set()
            while True:
                async for _ in conn.notifies(timeout=self.check_after_s):
                    self._fire()
                await asyncio.wait_for(conn.execute("SELECT 1"), timeout=10.0)
        finally:
            await conn.close()
