"""Every SQLite operation as a plain function over a sqlite3 connection: one function, one transaction.

SQLiteStore runs these in aiosqlite's thread (one hop per operation, however many statements); the CLI's
enqueue fast path calls `enqueue` directly without loading asyncio.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Collection, Sequence
from typing import Any

from queuectl.errors import ConflictError, NotFoundError
from queuectl.models import (
    TERMINAL_STATES,
    Attempt,
    AttemptStatus,
    Claim,
    Counts,
    EngineInfo,
    Finished,
    Job,
    JobState,
    Outcome,
)
from queuectl.store import sqlite_deps
from queuectl.store.sqlite_tx import _chunks, _marks, _states_of, write_tx

_RUNNABLE = "state IN ('pending', 'failed')"


def claim(
    conn: sqlite3.Connection, engine_id: str, now: float, limit: int, queues: Collection[str] | None = None
) -> list[Claim]:
    with write_tx(conn):
        return _claim(conn, engine_id, now, limit, queues)


def record(
    conn: sqlite3.Connection, engine_id: str, finished: Sequence[Finished], now: float, limit: int,
    queues: Collection[str] | None,
) -> tuple[list[bool], list[Claim]]:
    """The engine's round in one transaction: every ended attempt recorded, then the next jobs claimed. One
    commit for many state changes is what keeps a busy engine's store cost per job low."""
    with write_tx(conn):
        oks = _finish(conn, engine_id, finished) if finished else []
        return oks, (_claim(conn, engine_id, now, limit, queues) if limit > 0 else [])


def _claim(
    conn: sqlite3.Connection, engine_id: str, now: float, limit: int, queues: Collection[str] | None
) -> list[Claim]:
    if queues is None:
        # The common case, one statement over the claim index: it claims nothing while some queue is paused or
        # capped, so any row it returns means no queue restricts this claim.
        rows = conn.execute(
            f"""UPDATE jobs SET state = 'processing', engine_id = ?, started_at = ?, updated_at = ?,
                       runs = runs + 1
                WHERE seq IN (SELECT seq FROM jobs INDEXED BY jobs_claim
                              WHERE {_RUNNABLE} AND run_at <= ?
                              ORDER BY priority DESC, run_at, seq LIMIT ?)
                  AND NOT EXISTS (SELECT 1 FROM queues WHERE paused = 1 OR concurrency > 0)
                RETURNING *""",
            (engine_id, now, now, now, limit),
        ).fetchall()
        if rows:
            return _claims(rows)
    restricted = conn.execute(
        "SELECT name, concurrency, paused FROM queues WHERE paused = 1 OR concurrency > 0").fetchall()
    if queues is None and not restricted:
        return []  # nothing due
    seqs = _pick_restricted(conn, now, limit, queues, restricted)
    rows = []
    for part in _chunks(seqs):
        rows += conn.execute(
            f"""UPDATE jobs SET state = 'processing', engine_id = ?, started_at = ?, updated_at = ?,
                       runs = runs + 1 WHERE seq IN ({_marks(len(part))}) RETURNING *""",
            (engine_id, now, now, *part)).fetchall()
    return _claims(rows)


def _claims(rows: list[Any]) -> list[Claim]:
    claims = [Claim(job=Job.from_row(r), attempt=r["runs"]) for r in rows]
    claims.sort(key=lambda c: (-c.job.priority, c.job.run_at, c.job.seq))
    return claims


def _pick_restricted(
    conn: sqlite3.Connection, now: float, limit: int, queues: Collection[str] | None, restricted: list[sqlite3.Row]
) -> list[int]:
    """Claim order across the queues this engine may start jobs from now: not paused, below their concurrency
    (counted over every engine), and among `queues` if the engine serves only some. Each queue's candidates come
    from its own index, so a paused queue's backlog is never walked."""
    room: dict[str, int | None] = {}  # queue -> jobs it may still start (None: no limit of its own)
    names = [r[0] for r in conn.execute("SELECT name FROM queues")] if queues is None else list(queues)
    limits = {r["name"]: (None if r["paused"] else r["concurrency"]) for r in restricted}
    limited = [q for q in names if limits.get(q)]
    running = dict(conn.execute(
        f"SELECT queue, count(*) FROM jobs WHERE state = 'processing' AND queue IN ({_marks(len(limited))}) "
        "GROUP BY queue", limited).fetchall()) if limited else {}
    for name in names:
        if name in limits and limits[name] is None:
            continue  # paused
        cap = limits.get(name) or None
        room[name] = None if cap is None else cap - running.get(name, 0)
    candidates: list[tuple[int, float, int, str]] = []  # claim order first: (-priority, run_at, seq, queue)
    for name, left in room.items():
        if left is not None and left <= 0:
            continue
        candidates += (tuple(r) for r in conn.execute(
            f"""SELECT -priority, run_at, seq, queue FROM jobs INDEXED BY jobs_claim_queue
                WHERE queue = ? AND {_RUNNABLE} AND run_at <= ? ORDER BY priority DESC, run_at, seq LIMIT ?""",
            (name, now, limit if left is None else min(limit, left))))
    picked: list[int] = []
    for _, _, seq, name in sorted(candidates):
        left = room[name]
        if left is not None:
            if left <= 0:
                continue
            room[name] = left - 1
        picked.append(seq)
        if len(picked) == limit:
            break
    return picked


def finish(
    conn: sqlite3.Connection,
    claim: Claim,
    engine_id: str,
    outcome: Outcome,
    *,
    state: JobState,
    run_at: float | None,
) -> bool:
    """Close an attempt and move the job to `state` (completed, failed with run_at, dead or cancelled); a job
    that `queuectl cancel` asked to stop ends cancelled instead of being retried. Its dependants follow."""
    with write_tx(conn):
        (ok,) = _finish(conn, engine_id, [Finished(claim=claim, outcome=outcome, state=state, retry_at=run_at)])
        return ok


def _finish(conn: sqlite3.Connection, engine_id: str, finished: Sequence[Finished]) -> list[bool]:
    """finish() for each ended attempt: one UPDATE for the whole batch, one INSERT statement run for each attempt,
    one look-up for dependants, rather than three statements per attempt (each one prepared, bound and stepped
    on its own). False for an attempt whose job this claim no longer holds (another engine took it over)."""
    cancel_requested: dict[int, int] = {}  # seq -> cancel_requested, for the jobs this claim still held
    for part in _chunks(finished):
        params: list[object] = []
        for f in part:
            ended_at = f.outcome.finished_at
            params += (f.claim.job.seq, f.claim.attempt, f.state, f.retry_at,
                       ended_at if f.state in TERMINAL_STATES else None, ended_at, f.outcome.exit_code, f.outcome.error)
        values = ",".join(["(?, ?, ?, ?, ?, ?, ?, ?)"] * len(part))
        cancel_requested.update(conn.execute(
            f"""WITH v(seq, runs, state, run_at, finished_at, updated_at, exit_code, error) AS (VALUES {values})
                UPDATE jobs SET state = v.state, attempts = attempts + 1, run_at = COALESCE(v.run_at, jobs.run_at),
                       finished_at = v.finished_at, updated_at = v.updated_at, exit_code = v.exit_code,
                       last_error = v.error, engine_id = NULL
                FROM v
                WHERE jobs.seq = v.seq AND jobs.state = 'processing' AND jobs.engine_id = ? AND jobs.runs = v.runs
                RETURNING jobs.seq, jobs.cancel_requested""",
            (*params, engine_id)).fetchall())
    oks: list[bool] = []
    attempts: list[tuple[object, ...]] = []
    ends: list[tuple[str, JobState, float]] = []
    for f in finished:
        seq, outcome, state = f.claim.job.seq, f.outcome, f.state
        if seq not in cancel_requested:
            oks.append(False)
            continue
        if cancel_requested[seq] and state not in TERMINAL_STATES:
            state = JobState.CANCELLED
            conn.execute("UPDATE jobs SET state = 'cancelled', finished_at = ? WHERE seq = ?",
                         (outcome.finished_at, seq))
        status = AttemptStatus.SUCCEEDED if outcome.succeeded else (
            AttemptStatus.CANCELLED if state == JobState.CANCELLED else
            AttemptStatus.TIMED_OUT if outcome.timed_out else AttemptStatus.FAILED)
        attempts.append(_attempt_row(f.claim, engine_id, status, outcome.started_at, outcome.finished_at,
                                     outcome.exit_code, outcome.timed_out, outcome.error, outcome.output_tail,
                                     outcome.log_path))
        ends.append((f.claim.job.id, state, outcome.finished_at))
        oks.append(True)
    conn.executemany(_INSERT_ATTEMPT, attempts)
    completed = [job_id for job_id, state, _ in ends if state == JobState.COMPLETED]
    with_dependants = sqlite_deps.having_dependants(conn, completed) if completed else set()
    for job_id, state, ended_at in ends:
        if state != JobState.COMPLETED or job_id in with_dependants:
            _follow_end(conn, job_id, state, ended_at)
    return oks


def _follow_end(conn: sqlite3.Connection, job_id: str, state: JobState, now: float) -> None:
    if state == JobState.COMPLETED:
        sqlite_deps.promote(conn, job_id, now)
    elif state in (JobState.DEAD, JobState.CANCELLED):
        sqlite_deps.cancel_dependants(conn, job_id, state, now)


_INSERT_ATTEMPT = """INSERT OR REPLACE INTO attempts(job_id, number, status, engine_id, started_at, finished_at,
                         exit_code, timed_out, error, output_tail, log_path) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""


def _attempt_row(
    claim: Claim, engine_id: str | None, status: AttemptStatus, started_at: float, finished_at: float | None,
    exit_code: int | None, timed_out: bool, error: str | None, tail: str | None, log_path: str | None,
) -> tuple[object, ...]:
    return (claim.job.id, claim.attempt, status, engine_id, started_at, finished_at, exit_code, int(timed_out), error,
            tail, log_path)


def _insert_attempt(
    conn: sqlite3.Connection, claim: Claim, engine_id: str | None, status: AttemptStatus, started_at: float,
    finished_at: float | None, exit_code: int | None, timed_out: bool, error: str | None, tail: str | None,
    log_path: str | None,
) -> None:
    conn.execute(_INSERT_ATTEMPT, _attempt_row(claim, engine_id, status, started_at, finished_at, exit_code, timed_out,
                                               error, tail, log_path))


def release(conn: sqlite3.Connection, claim: Claim, engine_id: str, now: float, reason: str, run_at: float) -> bool:
    with write_tx(conn):
        row = conn.execute(
            """UPDATE jobs SET state = CASE WHEN cancel_requested = 1 THEN 'cancelled' ELSE 'pending' END,
                   run_at = ?, updated_at = ?, engine_id = NULL,
                   finished_at = CASE WHEN cancel_requested = 1 THEN ? END
               WHERE seq = ? AND state = 'processing' AND engine_id = ? AND runs = ? RETURNING state""",
            (run_at, now, now, claim.job.seq, engine_id, claim.attempt),
        ).fetchone()
        if row is None:
            return False
        started = claim.job.started_at if claim.job.started_at is not None else now
        _insert_attempt(conn, claim, engine_id, AttemptStatus.INTERRUPTED, started, now, None, False, reason,
                        None, None)
        _follow_end(conn, claim.job.id, JobState(row[0]), now)
    return True


def _check_ids(conn: sqlite3.Connection, ids: Sequence[str], allowed: Callable[[str], bool], verb: str) -> None:
    states = _states_of(conn, ids)
    for job_id in ids:
        if job_id not in states:
            raise NotFoundError(f"no job {job_id!r}")
        if not allowed(states[job_id]):
            raise ConflictError(f"job {job_id!r} is {states[job_id]} and cannot be {verb}")


def retry_dead(conn: sqlite3.Connection, ids: Sequence[str] | None, now: float) -> list[str]:
    # A cancel request the job ended dead before its engine saw must not cancel the retried job's next attempt.
    sets = "state = 'pending', attempts = 0, run_at = ?, updated_at = ?, finished_at = NULL, cancel_requested = 0"
    try:
        with write_tx(conn):
            if ids is None:
                rows = conn.execute(f"UPDATE jobs SET {sets} WHERE state = 'dead' RETURNING id", (now, now))
                ids = [r["id"] for r in rows.fetchall()]
            else:
                _check_ids(conn, ids, lambda s: s == JobState.DEAD, "retried from the dead-letter queue")
                for part in _chunks(ids):
                    conn.execute(f"UPDATE jobs SET {sets} WHERE id IN ({_marks(len(part))})", (now, now, *part))
            sqlite_deps.revive_dependants(conn, ids, now)
    except sqlite3.IntegrityError:  # the unique index: a newer active job took the key meanwhile
        raise ConflictError("cannot retry: a job with the same unique key is active now") from None
    return list(ids)


def delete(conn: sqlite3.Connection, ids: Sequence[str]) -> dict[str, int]:
    with write_tx(conn):
        _check_ids(conn, ids, lambda s: s != JobState.PROCESSING, "deleted while it runs")
        waiting = sqlite_deps.waiting_dependants(conn, ids)
        if waiting:
            dep, dependant = next(iter(waiting.items()))
            raise ConflictError(f"job {dep!r} cannot be deleted: job {dependant!r} runs after it "
                                f"(cancel or delete that one first)")
        runs: dict[str, int] = {}
        for part in _chunks(ids):
            runs.update(conn.execute(f"DELETE FROM jobs WHERE id IN ({_marks(len(part))}) RETURNING id, runs", part))
    return {job_id: runs[job_id] for job_id in ids}


def purge(
    conn: sqlite3.Connection, state: JobState, finished_before: float | None, limit: int | None = None
) -> dict[str, int]:
    cond = "state = ?" + ("" if finished_before is None else " AND COALESCE(finished_at, updated_at) < ?")
    params: tuple[object, ...] = (state,) if finished_before is None else (state, finished_before)
    with write_tx(conn):
        if limit is None:
            rows = conn.execute(f"DELETE FROM jobs WHERE {cond} RETURNING seq, id, runs", params)
        else:  # oldest first, a bounded batch: the write lock is held only briefly
            rows = conn.execute(f"""DELETE FROM jobs WHERE seq IN (SELECT seq FROM jobs WHERE {cond}
                                    ORDER BY seq LIMIT ?) RETURNING seq, id, runs""", (*params, limit))
        return {r["id"]: r["runs"] for r in sorted(rows.fetchall(), key=lambda r: r["seq"])}


def get(conn: sqlite3.Connection, job_id: str) -> Job:
    row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None:
        raise NotFoundError(f"no job {job_id!r}")
    return Job.from_row(row)


def list_jobs(
    conn: sqlite3.Connection, state: JobState | None, limit: int, offset: int, oldest_first: bool,
    queue: str | None = None, tag: str | None = None,
) -> list[Job]:
    order = "ASC" if oldest_first else "DESC"
    sql, params = select_jobs([("state = ?", state), ("queue = ?", queue),
                               ("seq IN (SELECT job_seq FROM job_tags WHERE tag = ?)", tag)])
    rows = conn.execute(f"{sql} ORDER BY seq {order} LIMIT ? OFFSET ?", (*params, limit, offset))
    return [Job.from_row(r) for r in rows]


def select_jobs(filters: Sequence[tuple[str, object]]) -> tuple[str, list[object]]:
    """`SELECT * FROM jobs WHERE ...` with the filters whose value is given (not None); each `?` in a filter's SQL
    takes that value."""
    where = [(sql, value) for sql, value in filters if value is not None]
    params = [value for sql, value in where for _ in range(sql.count("?"))]
    return "SELECT * FROM jobs" + (" WHERE " + " AND ".join(sql for sql, _ in where) if where else ""), params


def attempts(conn: sqlite3.Connection, job_id: str) -> list[Attempt]:
    rows = conn.execute("SELECT * FROM attempts WHERE job_id = ? ORDER BY number", (job_id,))
    return [Attempt.from_row(r) for r in rows]


def counts(conn: sqlite3.Connection, now: float) -> Counts:
    by_state = {JobState(r["state"]): int(r["n"]) for r in conn.execute("SELECT state, n FROM state_counts")}
    row = conn.execute(  # run_at <= now in SQL: a run_at that is not a number (text sorts last) is never due
        f"SELECT run_at FROM jobs INDEXED BY jobs_due WHERE {_RUNNABLE} AND run_at <= ? ORDER BY run_at LIMIT 1",
        (now,)).fetchone()
    age = now - row["run_at"] if row is not None else None
    return Counts(by_state=by_state, oldest_pending_age_s=age)


def next_due(conn: sqlite3.Connection, limit: int) -> list[tuple[float, str]]:
    rows = conn.execute(
        f"SELECT run_at, id FROM jobs INDEXED BY jobs_due WHERE {_RUNNABLE} ORDER BY run_at, seq LIMIT ?",
        (limit,),
    )
    # A run_at that is not a number (a hand-edited row; never due, as text sorts after numbers) is left out.
    return [(float(r["run_at"]), str(r["id"])) for r in rows if type(r["run_at"]) in (int, float)]


def change_token(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA data_version").fetchone()[0])


def config_items(conn: sqlite3.Connection) -> dict[str, str]:
    return {r["key"]: r["value"] for r in conn.execute("SELECT key, value FROM config")}


def config_set(conn: sqlite3.Connection, key: str, value: str) -> None:
    with write_tx(conn):
        conn.execute("INSERT INTO config(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = ?",
                     (key, value, value))


def config_unset(conn: sqlite3.Connection, key: str) -> bool:
    with write_tx(conn):
        return conn.execute("DELETE FROM config WHERE key = ?", (key,)).rowcount > 0


def register_engine(conn: sqlite3.Connection, e: EngineInfo) -> None:
    with write_tx(conn):
        conn.execute(
            """INSERT OR REPLACE INTO engines(id, host, pid, workers, started_at, heartbeat_at, stop_requested)
               VALUES (?, ?, ?, ?, ?, ?, ?)""",
            (e.id, e.host, e.pid, e.workers, e.started_at, e.heartbeat_at, int(e.stop_requested)),
        )


def heartbeat(conn: sqlite3.Connection, engine_id: str, now: float) -> bool | None:
    with write_tx(conn):
        row = conn.execute(
            "UPDATE engines SET heartbeat_at = ? WHERE id = ? RETURNING stop_requested", (now, engine_id)
        ).fetchone()
    return None if row is None else bool(row[0])


def deregister_engine(conn: sqlite3.Connection, engine_id: str) -> None:
    with write_tx(conn):
        conn.execute("DELETE FROM engines WHERE id = ?", (engine_id,))


def engines(conn: sqlite3.Connection) -> list[EngineInfo]:
    return [EngineInfo.from_row(r) for r in conn.execute("SELECT * FROM engines ORDER BY started_at")]


def request_stop(conn: sqlite3.Connection, engine_ids: Collection[str]) -> None:
    ids = list(engine_ids)
    with write_tx(conn):
        for part in _chunks(ids):
            conn.execute(f"UPDATE engines SET stop_requested = 1 WHERE id IN ({_marks(len(part))})", part)


def running(conn: sqlite3.Connection) -> list[Job]:
    rows = conn.execute("SELECT * FROM jobs WHERE state = 'processing' ORDER BY started_at")
    return [Job.from_row(r) for r in rows]


def recover(conn: sqlite3.Connection, now: float, stale_before: float, dead_engine_ids: Collection[str]) -> list[str]:
    dead = set(dead_engine_ids)
    with write_tx(conn):
        gone = [r["id"] for r in conn.execute("SELECT id, heartbeat_at FROM engines")
                if r["id"] in dead or r["heartbeat_at"] < stale_before]
        for part in _chunks(gone):
            conn.execute(f"DELETE FROM engines WHERE id IN ({_marks(len(part))})", part)
        orphans = conn.execute(
            """SELECT * FROM jobs WHERE state = 'processing'
               AND (engine_id IS NULL OR engine_id NOT IN (SELECT id FROM engines))"""
        ).fetchall()
        for row in orphans:
            job = Job.from_row(row)
            reason = f"interrupted: engine {job.engine_id} stopped (crashed or killed) during the attempt"
            _insert_attempt(conn, Claim(job=job, attempt=row["runs"]), job.engine_id, AttemptStatus.INTERRUPTED,
                            job.started_at if job.started_at is not None else now, now, None, False, reason,
                            None, None)
            conn.execute(
                """UPDATE jobs SET state = CASE WHEN cancel_requested = 1 THEN 'cancelled' ELSE 'pending' END,
                       finished_at = CASE WHEN cancel_requested = 1 THEN ? END, run_at = ?, updated_at = ?,
                       engine_id = NULL WHERE seq = ?""",
                (now, now, now, job.seq),
            )
            if job.cancel_requested:
                _follow_end(conn, job.id, JobState.CANCELLED, now)
    return [r["id"] for r in orphans]
