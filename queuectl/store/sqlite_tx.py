"""The SQLite write primitives and `enqueue`, kept free of heavy imports: the CLI's enqueue fast path uses this
module directly, before asyncio, typer or the dataclass models are loaded."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeVar

from queuectl.errors import ConflictError
from queuectl.store import rules

if TYPE_CHECKING:
    from queuectl.jobspec import NewJob

T = TypeVar("T")
#: Ids per IN (...) list, well under SQLite's variable limit.
CHUNK = 500


@contextmanager
def write_tx(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE takes the write lock up front, through the busy handler: no upgrade deadlocks."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def _marks(n: int) -> str:
    return ",".join("?" * n)


def _states_of(conn: sqlite3.Connection, ids: Sequence[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for part in _chunks(ids):
        rows = conn.execute(f"SELECT id, state FROM jobs WHERE id IN ({_marks(len(part))})", part)
        found.update({r["id"]: r["state"] for r in rows})
    return found


_INSERT = """INSERT INTO jobs(id, command, state, max_retries, priority, run_at, timeout_s, cwd, created_at,
             updated_at, queue, unique_key, env, tags, after, deps_left, cron)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""
#: States in which a job holds its unique key (models.ACTIVE_STATES, without importing the models).
ACTIVE = "('pending', 'waiting', 'failed', 'processing')"


def _row(j: NewJob, now: float, state: str = "pending", deps_left: int = 0) -> tuple[object, ...]:
    return (j.id, j.command, state, j.max_retries, j.priority, j.run_at, j.timeout_s, j.cwd, now, now, j.queue,
            j.unique_key, json.dumps(dict(j.env)) if j.env else None, json.dumps(j.tags) if j.tags else None,
            json.dumps(j.after) if j.after else None, deps_left, j.cron)


def enqueue(
    conn: sqlite3.Connection, jobs: Sequence[NewJob], now: float, replace: bool, if_exists: str = "error"
) -> list[str]:
    """Insert the batch in one transaction. With unique keys, if_exists="ignore" returns the id of the active job
    holding the key instead of refusing."""
    ids = [j.id for j in jobs]
    try:
        with write_tx(conn):
            if replace:
                _delete_for_replace(conn, jobs)
            if all(j.queue == "default" and not (j.after or j.unique_key or j.tags) for j in jobs):
                conn.executemany(_INSERT, [_row(j, now) for j in jobs])  # the common case, one statement
                return ids
            ids = [_insert_one(conn, j, now, if_exists) for j in jobs]
            conn.executemany("INSERT OR IGNORE INTO queues(name) VALUES (?)",
                             [(q,) for q in dict.fromkeys(j.queue for j in jobs)])
    except sqlite3.IntegrityError:
        # Rolled back by now, so what exists is what existed before this batch.
        existing = _states_of(conn, ids)
        taken = next((i for i in ids if i in existing), None)
        if taken is None:
            raise ConflictError("the batch holds the same job id twice") from None
        raise ConflictError(f"job {taken!r} already exists (use --replace to overwrite it)") from None
    return ids


def _delete_for_replace(conn: sqlite3.Connection, jobs: Sequence[NewJob]) -> None:
    existing = _states_of(conn, [j.id for j in jobs])
    busy = [i for i in existing if existing[i] == "processing"]
    if busy:
        raise ConflictError(f"job {busy[0]!r} is running and cannot be replaced")
    for job in jobs:
        if job.id in existing and job.after and _reaches(conn, job.after, job.id):
            raise ConflictError(f"job {job.id!r} cannot run after {', '.join(job.after)}: they already run after "
                                f"it (a dependency cycle)")
    for part in _chunks(list(existing)):
        conn.execute(f"DELETE FROM jobs WHERE id IN ({_marks(len(part))})", part)


def _reaches(conn: sqlite3.Connection, start: Sequence[str], target: str) -> bool:
    """Whether `target` is among the jobs that `start` run after, directly or through others. New jobs can only
    run after jobs that exist, so a cycle can only be made by replacing a job that others already run after."""
    seen: set[str] = set()
    frontier = list(start)
    while frontier:
        job_id = frontier.pop()
        if job_id == target:
            return True
        if job_id in seen:
            continue
        seen.add(job_id)
        frontier += [r[0] for r in conn.execute(
            "SELECT d.dep_id FROM jobs j JOIN job_deps d ON d.job_seq = j.seq WHERE j.id = ?", (job_id,))]
    return False


def _insert_one(conn: sqlite3.Connection, job: NewJob, now: float, if_exists: str) -> str:
    if job.unique_key is not None:
        holder = conn.execute(f"SELECT id, state FROM jobs WHERE unique_key = ? AND state IN {ACTIVE}",
                              (job.unique_key,)).fetchone()
        if holder is not None:
            if if_exists == "ignore":
                return str(holder[0])
            raise ConflictError(f"job {holder[0]!r} with unique key {job.unique_key!r} is still {holder[1]} "
                                "(--if-exists ignore returns its id instead)")
    left = rules.deps_left(job.id, job.after, _states_of(conn, job.after))
    seq = conn.execute(_INSERT, _row(job, now, "waiting" if left else "pending", left)).lastrowid
    conn.executemany("INSERT INTO job_deps(dep_id, job_seq) VALUES (?, ?)", [(d, seq) for d in job.after])
    conn.executemany("INSERT INTO job_tags(tag, job_seq) VALUES (?, ?)", [(t, seq) for t in job.tags])
    return job.id
