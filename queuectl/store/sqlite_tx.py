"""The SQLite write primitives and `enqueue`, kept free of heavy imports: the CLI's enqueue fast path uses this
module directly, before asyncio, typer or the dataclass models are loaded."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeVar

from queuectl.errors import ConflictError

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
             updated_at) VALUES (?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?)"""


def enqueue(conn: sqlite3.Connection, jobs: Sequence[NewJob], now: float, replace: bool) -> list[str]:
    ids = [j.id for j in jobs]
    rows = [(j.id, j.command, j.max_retries, j.priority, j.run_at, j.timeout_s, j.cwd, now, now) for j in jobs]
    try:
        with write_tx(conn):
            if replace:
                existing = _states_of(conn, ids)
                busy = [i for i in ids if existing.get(i) == "processing"]
                if busy:
                    raise ConflictError(f"job {busy[0]!r} is running and cannot be replaced")
                for part in _chunks(list(existing)):
                    conn.execute(f"DELETE FROM jobs WHERE id IN ({_marks(len(part))})", part)
            conn.executemany(_INSERT, rows)
    except sqlite3.IntegrityError:
        # Rolled back by now, so what exists is what existed before this batch.
        existing = _states_of(conn, ids)
        taken = next((i for i in ids if i in existing), None)
        if taken is None:
            raise ConflictError("the batch holds the same job id twice") from None
        raise ConflictError(f"job {taken!r} already exists (use --replace to overwrite it)") from None
    return ids
