"""Dependencies on SQLite: what a job's end does to the jobs that run after it. Called inside the transaction that
records the end, so a dependant's state never disagrees with its dependency's.

Each function costs O(the job's dependants): job_deps is keyed by the dependency's id.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from queuectl.store.sqlite_tx import _chunks, _marks


def having_dependants(conn: sqlite3.Connection, dep_ids: Sequence[str]) -> set[str]:
    """Which of these jobs some job runs after: for most completed jobs none does, and one look-up in the index for
    the whole batch settles that."""
    found: set[str] = set()
    for part in _chunks(dep_ids):
        found.update(r[0] for r in conn.execute(
            f"SELECT DISTINCT dep_id FROM job_deps WHERE dep_id IN ({_marks(len(part))})", part))
    return found


def promote(conn: sqlite3.Connection, dep_id: str, now: float) -> int:
    """dep_id completed: one dependency fewer for each waiting dependant; those with none left become pending.
    Callers ask having_dependants first: most completed jobs have none, and one look-up settles a whole batch."""
    conn.execute(
        """UPDATE jobs SET deps_left = deps_left - 1
           WHERE seq IN (SELECT job_seq FROM job_deps WHERE dep_id = ?) AND state = 'waiting'""", (dep_id,))
    return conn.execute(
        """UPDATE jobs SET state = 'pending', run_at = max(run_at, ?), updated_at = ?
           WHERE seq IN (SELECT job_seq FROM job_deps WHERE dep_id = ?) AND state = 'waiting' AND deps_left <= 0""",
        (now, now, dep_id)).rowcount


def cancel_dependants(conn: sqlite3.Connection, root_id: str, ended: str, now: float) -> list[str]:
    """root_id ended dead or cancelled: every job waiting on it, directly or through others, is cancelled and
    remembers root_id (blocked_by), so that retrying root_id brings them back."""
    cancelled: list[str] = []
    frontier = [root_id]
    while frontier:
        dep = frontier.pop()
        through = "" if dep == root_id else f" through {dep}"
        rows = conn.execute(
            """UPDATE jobs SET state = 'cancelled', blocked_by = ?, last_error = ?, finished_at = ?, updated_at = ?
               WHERE seq IN (SELECT job_seq FROM job_deps WHERE dep_id = ?) AND state = 'waiting' RETURNING id""",
            (root_id, f"not run: it runs after {root_id}{through}, which ended {ended}", now, now, dep)).fetchall()
        ids = [r[0] for r in rows]
        cancelled += ids
        frontier += ids
    return cancelled


def revive_dependants(conn: sqlite3.Connection, root_ids: Sequence[str], now: float) -> list[str]:
    """root_ids are runnable again (dlq retry): the jobs they cancelled wait again for what has not completed.
    A dependency that was deleted meanwhile counts as done."""
    revived: list[str] = []
    for part in _chunks(list(root_ids)):
        rows = conn.execute(
            f"SELECT seq, id FROM jobs WHERE blocked_by IN ({_marks(len(part))}) AND state = 'cancelled'",
            part).fetchall()
        for seq, job_id in rows:
            left = conn.execute(
                """SELECT count(*) FROM job_deps d JOIN jobs j ON j.id = d.dep_id
                   WHERE d.job_seq = ? AND j.state <> 'completed'""", (seq,)).fetchone()[0]
            conn.execute(
                """UPDATE jobs SET state = ?, deps_left = ?, blocked_by = NULL, last_error = NULL, finished_at = NULL,
                       run_at = max(run_at, ?), updated_at = ? WHERE seq = ?""",
                ("waiting" if left else "pending", left, now, now, seq))
            revived.append(job_id)
    return revived


def waiting_dependants(conn: sqlite3.Connection, ids: Sequence[str]) -> dict[str, str]:
    """For each of ids that active jobs still wait on: one such dependant (for a refusal message)."""
    found: dict[str, str] = {}
    for part in _chunks(list(ids)):
        rows = conn.execute(
            f"""SELECT d.dep_id, j.id FROM job_deps d JOIN jobs j ON j.seq = d.job_seq
                WHERE d.dep_id IN ({_marks(len(part))}) AND j.state = 'waiting'""", part)
        for dep_id, job_id in rows:
            found.setdefault(dep_id, job_id)
    return found
