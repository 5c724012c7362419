"""SQLite operations for scheduling beyond one queue: named queues, pause, cancel, cron entries, webhooks.

Like sqlite_ops: one function, one transaction, run in aiosqlite's thread by SQLiteStore.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Sequence

from queuectl import cron
from queuectl.errors import ConflictError, NotFoundError
from queuectl.models import CronEntry, CronTick, JobState, QueueInfo, Webhook
from queuectl.store import rules, sqlite_deps
from queuectl.store.sqlite_tx import _chunks, _insert_one, _marks, _states_of, write_tx

# ---- queues ---------------------------------------------------------------------------------------------------


def queues(conn: sqlite3.Connection, count_runnable: bool) -> list[QueueInfo]:
    # Processing rows are few (at most the engines' workers): counting them is cheap, unlike the runnable ones.
    running = dict(conn.execute("SELECT queue, count(*) FROM jobs WHERE state = 'processing' GROUP BY queue"))
    runnable: dict[str, int] = {}
    if count_runnable:  # the partial index covers this count: no table rows are read
        runnable = dict(conn.execute("""SELECT queue, count(*) FROM jobs INDEXED BY jobs_claim_queue
                                        WHERE state IN ('pending', 'failed') GROUP BY queue"""))
    return [QueueInfo(name=name, concurrency=concurrency, paused=bool(paused),
                      runnable=runnable.get(name, 0) if count_runnable else None, running=running.get(name, 0))
            for name, concurrency, paused in conn.execute("SELECT name, concurrency, paused FROM queues ORDER BY name")]


def _known_queues(conn: sqlite3.Connection, names: Sequence[str]) -> None:
    known = {r[0] for r in conn.execute("SELECT name FROM queues")}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise NotFoundError(f"no queue {unknown[0]!r}; queues are: {', '.join(sorted(known))} "
                            "(a queue exists once a job is enqueued to it, or after `queuectl queue add`)")


def queue_add(conn: sqlite3.Connection, name: str, concurrency: int) -> bool:
    with write_tx(conn):
        return conn.execute("INSERT OR IGNORE INTO queues(name, concurrency) VALUES (?, ?)",
                            (name, concurrency)).rowcount > 0


def queue_set(conn: sqlite3.Connection, name: str, concurrency: int) -> None:
    with write_tx(conn):
        _known_queues(conn, [name])
        conn.execute("UPDATE queues SET concurrency = ? WHERE name = ?", (concurrency, name))


def set_paused(conn: sqlite3.Connection, names: Sequence[str] | None, paused: bool) -> list[str]:
    """Pause or resume these queues (None: every queue). Returns the queues whose state changed."""
    with write_tx(conn):
        if names is None:
            rows = conn.execute("UPDATE queues SET paused = ? WHERE paused <> ? RETURNING name", (paused, paused))
            return sorted(r[0] for r in rows.fetchall())
        _known_queues(conn, names)
        changed: list[str] = []
        for part in _chunks(list(names)):
            changed += [r[0] for r in conn.execute(
                f"UPDATE queues SET paused = ? WHERE paused <> ? AND name IN ({_marks(len(part))}) RETURNING name",
                (paused, paused, *part)).fetchall()]
        return sorted(changed)


def has_work(conn: sqlite3.Connection, now: float, served: Collection[str] | None) -> bool:
    """Whether a job this engine could start is due now, or a retry is scheduled, in a queue it serves that is
    not paused (the --until-idle check when some queues are paused or not served)."""
    names = [r[0] for r in conn.execute("SELECT name FROM queues WHERE paused = 0")]
    allowed = [n for n in names if served is None or n in served]
    if not allowed:
        return False
    return conn.execute(
        f"""SELECT 1 FROM jobs INDEXED BY jobs_claim_queue WHERE queue IN ({_marks(len(allowed))})
            AND state IN ('pending', 'failed') AND (state = 'failed' OR run_at <= ?) LIMIT 1""",
        (*allowed, now)).fetchone() is not None


# ---- cancel ---------------------------------------------------------------------------------------------------

_CANCELLED_BY_USER = "cancelled by `queuectl cancel`"


def cancel(conn: sqlite3.Connection, ids: Sequence[str], now: float) -> tuple[list[str], list[str]]:
    """Jobs not running become cancelled at once (with their dependants); running ones are flagged for their
    engine to terminate. Returns (cancelled, being cancelled). Refuses unknown and finished jobs, changing nothing."""
    with write_tx(conn):
        done, running = rules.split_cancellable(ids, _states_of(conn, ids))
        for part in _chunks(done):
            conn.execute(
                f"""UPDATE jobs SET state = 'cancelled', finished_at = ?, updated_at = ?, last_error = ?
                    WHERE id IN ({_marks(len(part))})""", (now, now, _CANCELLED_BY_USER, *part))
        for job_id in done:
            sqlite_deps.cancel_dependants(conn, job_id, JobState.CANCELLED, now)
        for part in _chunks(running):
            conn.execute(f"""UPDATE jobs SET cancel_requested = 1, last_error = ?
                             WHERE id IN ({_marks(len(part))})""", (_CANCELLED_BY_USER, *part))
    return done, running


def cancel_requests(conn: sqlite3.Connection, engine_id: str) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT id FROM jobs INDEXED BY jobs_cancel WHERE engine_id = ? AND cancel_requested = 1", (engine_id,))]


def job_states(conn: sqlite3.Connection, ids: Sequence[str]) -> dict[str, JobState]:
    return {k: JobState(v) for k, v in _states_of(conn, ids).items()}


# ---- cron -----------------------------------------------------------------------------------------------------


def cron_add(conn: sqlite3.Connection, entry: CronEntry) -> None:
    with write_tx(conn):
        if conn.execute("SELECT 1 FROM crons WHERE name = ?", (entry.name,)).fetchone():
            raise ConflictError(f"cron entry {entry.name!r} already exists (remove it first)")
        conn.execute(
            """INSERT INTO crons(name, schedule, command, cwd, queue, priority, max_retries, timeout_s, env, paused,
                   catch_up, next_run_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            (entry.name, entry.schedule, entry.command, entry.cwd, entry.queue, entry.priority, entry.max_retries,
             entry.timeout_s, json.dumps(dict(entry.env)) if entry.env else None, entry.paused, entry.catch_up,
             entry.next_run_at, entry.created_at))
        conn.execute("INSERT OR IGNORE INTO queues(name) VALUES (?)", (entry.queue,))


def crons(conn: sqlite3.Connection) -> list[CronEntry]:
    return [CronEntry.from_row(r) for r in conn.execute("SELECT * FROM crons ORDER BY name")]


def cron_remove(conn: sqlite3.Connection, name: str) -> None:
    with write_tx(conn):
        if conn.execute("DELETE FROM crons WHERE name = ?", (name,)).rowcount == 0:
            raise NotFoundError(f"no cron entry {name!r}")


def cron_set_paused(conn: sqlite3.Connection, name: str, paused: bool, now: float) -> None:
    with write_tx(conn):
        row = conn.execute("SELECT * FROM crons WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFoundError(f"no cron entry {name!r}")
        # Resuming starts from now: the runs skipped while paused are not made up.
        next_run_at = cron.next_run(row["schedule"], now) if not paused and row["paused"] else row["next_run_at"]
        conn.execute("UPDATE crons SET paused = ?, next_run_at = ? WHERE name = ?", (paused, next_run_at, name))


def cron_tick(conn: sqlite3.Connection, now: float) -> CronTick:
    """Enqueue the job of every entry that is due, advance each to its next due time, all in one transaction:
    an engine that ticks after another finds nothing due, so each due time enqueues exactly one job. Returns
    the ids enqueued, the next due time of any entry, and the entries that could not be read (cron.plan_row)."""
    enqueued: list[str] = []
    unreadable: dict[str, str] = {}
    soonest = conn.execute("SELECT min(next_run_at) FROM crons WHERE paused = 0").fetchone()[0]
    if soonest is None or soonest > now:  # nothing due: no write transaction (an idle engine ticks every few s)
        return CronTick(enqueued, None if soonest is None else float(soonest), unreadable)
    with write_tx(conn):
        for row in conn.execute("SELECT * FROM crons WHERE paused = 0 AND next_run_at <= ?", (now,)).fetchall():
            plan, why = cron.plan_row(row, now)
            if why is not None:
                unreadable[row["name"]] = why
            if plan.job is not None and conn.execute("SELECT 1 FROM jobs WHERE id = ?", (plan.job.id,)).fetchone() \
                    is None:
                enqueued.append(_insert_one(conn, plan.job, now, "ignore"))
                conn.execute("INSERT OR IGNORE INTO queues(name) VALUES (?)", (plan.job.queue,))
            conn.execute(
                """UPDATE crons SET next_run_at = ?, last_run_at = COALESCE(?, last_run_at),
                       last_job_id = COALESCE(?, last_job_id) WHERE name = ?""",
                (plan.next_run_at, plan.job and now, plan.job and plan.job.id, row["name"]))
        nxt = conn.execute("SELECT min(next_run_at) FROM crons WHERE paused = 0").fetchone()[0]
    return CronTick(enqueued, None if nxt is None else float(nxt), unreadable)


# ---- webhooks -------------------------------------------------------------------------------------------------


def webhook_add(conn: sqlite3.Connection, url: str, events: Sequence[str], secret: str | None, now: float) -> int:
    with write_tx(conn):
        cur = conn.execute("INSERT INTO webhooks(url, events, secret, created_at) VALUES (?, ?, ?, ?)",
                           (url, ",".join(events), secret, now))
        return int(cur.lastrowid or 0)


def webhooks(conn: sqlite3.Connection) -> list[Webhook]:
    return [Webhook.from_row(r) for r in conn.execute("SELECT * FROM webhooks ORDER BY id")]


def webhook_remove(conn: sqlite3.Connection, webhook_id: int) -> None:
    with write_tx(conn):
        if conn.execute("DELETE FROM webhooks WHERE id = ?", (webhook_id,)).rowcount == 0:
            raise NotFoundError(f"no webhook {webhook_id}")
