"""SQLite reads for watching the queue (stats, `top`, the dashboard, /metrics): see Store.stats and
Store.search_jobs for the contract. Like sqlite_ops, each function runs in aiosqlite's thread."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

from queuectl.models import Job, JobState
from queuectl.store.sqlite_ops import select_jobs

if TYPE_CHECKING:
    from queuectl.stats import StatsRow


_WINDOW = "a.finished_at >= ? AND a.finished_at < ?"
# Joins from attempts to jobs are written `attempts a INDEXED BY attempts_finished CROSS JOIN jobs j`: in SQLite
# CROSS JOIN fixes the loop order (attempts of the window outside, one jobs lookup by id each); left to itself the
# planner may walk every dead job and range-scan attempts for each (seconds to minutes on a million rows).
_FAILED = "a.status IN ('failed', 'timed_out')"


def stats(
    conn: sqlite3.Connection, since: float, until: float, samples: int, bucket_s: float | None, top: int
) -> StatsRow:
    from queuectl.stats import FailureRow, StatsRow, fold_series

    window = (since, until)
    # A read transaction: every statement sees the same snapshot (WAL: the engine keeps writing meanwhile).
    conn.execute("BEGIN")
    try:
        by_status: dict[str, int] = {}
        run_sum, run_max = 0.0, None
        for r in conn.execute(
            f"""SELECT a.status AS status, count(*) AS n, sum(a.finished_at - a.started_at) AS total,
                       max(a.finished_at - a.started_at) AS longest
                FROM attempts a INDEXED BY attempts_finished WHERE {_WINDOW} GROUP BY a.status""", window):
            by_status[r["status"]] = int(r["n"])
            if r["status"] != "interrupted":
                run_sum += float(r["total"] or 0.0)
                if r["longest"] is not None:
                    run_max = max(float(r["longest"]), run_max or 0.0)
        buried = int(conn.execute(
            f"""SELECT count(*) FROM attempts a INDEXED BY attempts_finished CROSS JOIN jobs j ON j.id = a.job_id
                WHERE {_WINDOW} AND {_FAILED} AND j.state = 'dead' AND j.runs = a.number""", window,
        ).fetchone()[0])
        run_samples: list[float] = []
        wait_samples: list[float] = []
        if samples > 0:
            run_samples = [float(r[0]) for r in conn.execute(
                f"""SELECT a.finished_at - a.started_at FROM attempts a INDEXED BY attempts_finished
                    WHERE {_WINDOW} AND a.status <> 'interrupted' ORDER BY a.finished_at DESC LIMIT ?""",
                (*window, samples))]
            wait_samples = [float(r[0]) for r in conn.execute(
                f"""SELECT max(0.0, a.started_at - j.run_at) FROM attempts a INDEXED BY attempts_finished
                    CROSS JOIN jobs j ON j.id = a.job_id AND j.runs = a.number
                    WHERE {_WINDOW} AND j.state IN ('completed', 'dead') AND a.status <> 'interrupted'
                    ORDER BY a.finished_at DESC LIMIT ?""", (*window, samples))]
        top_failing: list[tuple[str, int]] = []
        recent: list[FailureRow] = []
        if top > 0:
            top_failing = [(str(r[0]), int(r[1])) for r in conn.execute(
                f"""SELECT j.command, count(*) AS n FROM attempts a INDEXED BY attempts_finished
                    CROSS JOIN jobs j ON j.id = a.job_id WHERE {_WINDOW} AND {_FAILED}
                    GROUP BY j.command ORDER BY n DESC, j.command LIMIT ?""", (*window, top))]
            recent = [
                FailureRow(job_id=r["job_id"], attempt=int(r["number"]), finished_at=float(r["finished_at"]),
                           status=r["status"], exit_code=r["exit_code"], error=r["error"], command=r["command"])
                for r in conn.execute(
                    f"""SELECT a.job_id, a.number, a.finished_at, a.status, a.exit_code, a.error, j.command
                        FROM attempts a INDEXED BY attempts_finished LEFT JOIN jobs j ON j.id = a.job_id
                        WHERE {_WINDOW} AND {_FAILED} ORDER BY a.finished_at DESC LIMIT ?""", (*window, top))
            ]
        series: list[tuple[float, int, int]] = []
        if bucket_s is not None and bucket_s > 0:
            rows = conn.execute(
                f"""SELECT CAST((a.finished_at - ?) / ? AS INTEGER) AS k, a.status AS status, count(*) AS n
                    FROM attempts a INDEXED BY attempts_finished WHERE {_WINDOW} GROUP BY k, a.status""",
                (since, bucket_s, *window))
            series = fold_series(((r["k"], r["status"], r["n"]) for r in rows), since=since, bucket_s=bucket_s)
    finally:
        conn.execute("COMMIT")
    return StatsRow(since=since, until=until, attempts=by_status, buried=buried, run_sum_s=run_sum,
                    run_max_s=run_max, run_samples=run_samples, wait_samples=wait_samples, top_failing=top_failing,
                    recent_failures=recent, series=series)


def search_jobs(
    conn: sqlite3.Connection, text: str | None, state: JobState | None, below_seq: int | None,
    above_seq: int | None, limit: int, newest_first: bool,
) -> list[Job]:
    sql, params = select_jobs([("state = ?", state), ("seq < ?", below_seq), ("seq > ?", above_seq),
                               ("(instr(id, ?) = 1 OR instr(command, ?) > 0)", text or None)])
    sql += f" ORDER BY seq {'DESC' if newest_first else 'ASC'} LIMIT ?"
    return [Job.from_row(r) for r in conn.execute(sql, (*params, limit))]
