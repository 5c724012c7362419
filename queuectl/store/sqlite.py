"""The SQLite store: sqlite_ops' functions run in aiosqlite's connection thread."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import aiosqlite

from queuectl.errors import StoreError, StoreFullError, StoreGoneError
from queuectl.jobspec import NewJob
from queuectl.models import (
    Attempt,
    Claim,
    Counts,
    CronEntry,
    CronTick,
    EngineInfo,
    Finished,
    Job,
    JobState,
    Outcome,
    QueueInfo,
    Webhook,
)
from queuectl.store import sqlite_ops as ops
from queuectl.store import sqlite_sched as sched
from queuectl.store import sqlite_schema, sqlite_stats, sqlite_tx
from queuectl.store.base import Store

if TYPE_CHECKING:
    from queuectl.stats import StatsRow

T = TypeVar("T")


def store_error(exc: sqlite3.Error, path: Path) -> StoreError:
    """One readable line for the ways SQLite can fail under us."""
    text = str(exc)
    if sqlite_schema.is_locked(exc):
        return sqlite_schema.locked_error(path)
    if "disk is full" in text or "database or disk is full" in text:
        return StoreFullError(f"disk full: cannot write to {path}")
    if "readonly" in text:
        return StoreError(f"database {path} is read-only")
    if "not a database" in text or "malformed" in text:
        return StoreError(f"database {path} is damaged or not a queuectl database ({text})")
    return StoreError(f"database error on {path}: {text}")


class SQLiteStore(Store):
    """The embedded default. WAL mode: readers never block the writer; writers queue on the busy timeout."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: aiosqlite.Connection | None = None
        self._identity: tuple[int, int] | None = None

    async def open(self) -> None:
        def connect() -> sqlite3.Connection:
            conn = sqlite_schema.connect(self.path)
            try:
                sqlite_schema.migrate(conn, self.path)
            except BaseException:
                conn.close()
                raise
            return conn

        try:
            conn = await asyncio.to_thread(connect)
        except sqlite3.Error as exc:
            raise store_error(exc, self.path) from None
        # aiosqlite's connector cannot fail now: a failing one leaves aiosqlite's worker thread behind, and it
        # then posts to an event loop the CLI has closed ("RuntimeError: Event loop is closed" on stderr).
        self._conn = await aiosqlite.Connection(lambda: conn, iter_chunk_size=64)
        self._identity = self._file_identity()

    def _file_identity(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_dev, st.st_ino

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close()

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._conn is None:
            raise StoreError("store is not open")
        # aiosqlite's own methods hop to its thread once per statement; a whole operation in one hop keeps a
        # transaction of several statements as cheap as one. _execute is how every aiosqlite method does it.
        conn = self._conn
        try:
            return await conn._execute(fn, conn._conn, *args)  # type: ignore[no-untyped-call,no-any-return]
        except sqlite3.Error as exc:
            raise store_error(exc, self.path) from None

    async def enqueue(
        self, jobs: Sequence[NewJob], *, now: float, replace: bool = False, if_exists: str = "error"
    ) -> list[str]:
        return await self._run(sqlite_tx.enqueue, jobs, now, replace, if_exists)

    async def claim_due(
        self, engine_id: str, *, now: float, limit: int, queues: Collection[str] | None = None
    ) -> list[Claim]:
        return await self._run(ops.claim, engine_id, now, limit, queues)

    async def record(
        self, engine_id: str, finished: Sequence[Finished], *, now: float, claim_limit: int = 0,
        queues: Collection[str] | None = None,
    ) -> tuple[list[bool], list[Claim]]:
        return await self._run(ops.record, engine_id, finished, now, claim_limit, queues)

    async def complete(self, claim: Claim, engine_id: str, outcome: Outcome) -> bool:
        return await self._run(_finish, claim, engine_id, outcome, JobState.COMPLETED, None)

    async def schedule_retry(self, claim: Claim, engine_id: str, outcome: Outcome, *, retry_at: float) -> bool:
        return await self._run(_finish, claim, engine_id, outcome, JobState.FAILED, retry_at)

    async def bury(self, claim: Claim, engine_id: str, outcome: Outcome) -> bool:
        return await self._run(_finish, claim, engine_id, outcome, JobState.DEAD, None)

    async def bury_cancelled(self, claim: Claim, engine_id: str, outcome: Outcome) -> bool:
        return await self._run(_finish, claim, engine_id, outcome, JobState.CANCELLED, None)

    async def release(
        self, claim: Claim, engine_id: str, *, now: float, reason: str, run_at: float | None = None
    ) -> bool:
        return await self._run(ops.release, claim, engine_id, now, reason, now if run_at is None else run_at)

    async def retry_dead(self, job_ids: Sequence[str] | None, *, now: float) -> list[str]:
        return await self._run(ops.retry_dead, job_ids, now)

    async def delete(self, job_ids: Sequence[str]) -> dict[str, int]:
        return await self._run(ops.delete, job_ids)

    async def purge(
        self, state: JobState, *, finished_before: float | None, limit: int | None = None
    ) -> dict[str, int]:
        return await self._run(ops.purge, state, finished_before, limit)

    async def get(self, job_id: str) -> Job:
        return await self._run(ops.get, job_id)

    async def list_jobs(
        self, *, state: JobState | None = None, limit: int = 50, offset: int = 0, oldest_first: bool = False,
        queue: str | None = None, tag: str | None = None,
    ) -> list[Job]:
        return await self._run(ops.list_jobs, state, limit, offset, oldest_first, queue, tag)

    async def attempts(self, job_id: str) -> list[Attempt]:
        return await self._run(ops.attempts, job_id)

    async def counts(self, *, now: float) -> Counts:
        return await self._run(ops.counts, now)

    async def next_due(self, *, limit: int) -> list[tuple[float, str]]:
        return await self._run(ops.next_due, limit)

    async def change_token(self) -> int:
        return await self._run(ops.change_token)

    async def queues(self, *, count_runnable: bool = True) -> list[QueueInfo]:
        return await self._run(sched.queues, count_runnable)

    async def queue_add(self, name: str, *, concurrency: int = 0) -> bool:
        return await self._run(sched.queue_add, name, concurrency)

    async def queue_set(self, name: str, *, concurrency: int) -> None:
        await self._run(sched.queue_set, name, concurrency)

    async def set_paused(self, names: Sequence[str] | None, *, paused: bool) -> list[str]:
        return await self._run(sched.set_paused, names, paused)

    async def has_work(self, *, now: float, served: Collection[str] | None) -> bool:
        return await self._run(sched.has_work, now, served)

    async def cancel(self, job_ids: Sequence[str], *, now: float) -> tuple[list[str], list[str]]:
        return await self._run(sched.cancel, job_ids, now)

    async def cancel_requests(self, engine_id: str) -> list[str]:
        return await self._run(sched.cancel_requests, engine_id)

    async def job_states(self, job_ids: Sequence[str]) -> dict[str, JobState]:
        return await self._run(sched.job_states, job_ids)

    async def cron_add(self, entry: CronEntry) -> None:
        await self._run(sched.cron_add, entry)

    async def crons(self) -> list[CronEntry]:
        return await self._run(sched.crons)

    async def cron_remove(self, name: str) -> None:
        await self._run(sched.cron_remove, name)

    async def cron_set_paused(self, name: str, *, paused: bool, now: float) -> None:
        await self._run(sched.cron_set_paused, name, paused, now)

    async def cron_tick(self, *, now: float) -> CronTick:
        return await self._run(sched.cron_tick, now)

    async def webhook_add(self, url: str, *, events: Sequence[str], secret: str | None, now: float) -> int:
        return await self._run(sched.webhook_add, url, events, secret, now)

    async def webhooks(self) -> list[Webhook]:
        return await self._run(sched.webhooks)

    async def webhook_remove(self, webhook_id: int) -> None:
        await self._run(sched.webhook_remove, webhook_id)

    async def config_items(self) -> dict[str, str]:
        return await self._run(ops.config_items)

    async def config_set(self, key: str, value: str) -> None:
        await self._run(ops.config_set, key, value)

    async def config_unset(self, key: str) -> bool:
        return await self._run(ops.config_unset, key)

    async def register_engine(self, engine: EngineInfo) -> None:
        await self._run(ops.register_engine, engine)

    async def heartbeat(self, engine_id: str, *, now: float) -> bool | None:
        # An open connection keeps writing to a deleted file without complaint: check the path still names it.
        if self._identity is not None and self._file_identity() != self._identity:
            raise StoreGoneError(f"database {self.path} was removed or replaced while the engine ran")
        return await self._run(ops.heartbeat, engine_id, now)

    async def deregister_engine(self, engine_id: str) -> None:
        await self._run(ops.deregister_engine, engine_id)

    async def engines(self) -> list[EngineInfo]:
        return await self._run(ops.engines)

    async def request_stop(self, engine_ids: Collection[str]) -> None:
        await self._run(ops.request_stop, engine_ids)

    async def running(self) -> list[Job]:
        return await self._run(ops.running)

    async def recover(self, *, now: float, stale_before: float, dead_engine_ids: Collection[str]) -> list[str]:
        return await self._run(ops.recover, now, stale_before, dead_engine_ids)

    async def stats(
        self, *, since: float, until: float, samples: int = 0, bucket_s: float | None = None, top: int = 0
    ) -> StatsRow:
        return await self._run(sqlite_stats.stats, since, until, samples, bucket_s, top)

    async def search_jobs(
        self, *, text: str | None = None, state: JobState | None = None, below_seq: int | None = None,
        above_seq: int | None = None, limit: int = 50, newest_first: bool = True,
    ) -> list[Job]:
        return await self._run(sqlite_stats.search_jobs, text, state, below_seq, above_seq, limit, newest_first)


def _finish(
    conn: sqlite3.Connection, claim: Claim, engine_id: str, outcome: Outcome, state: JobState,
    run_at: float | None,
) -> bool:
    return ops.finish(conn, claim, engine_id, outcome, state=state, run_at=run_at)
