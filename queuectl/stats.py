"""`queuectl stats`: what the store aggregates over a time window (StatsRow), and the pure summary of it (Stats).

No I/O here. The store's `stats()` does the counting in the database (one read transaction over the attempts
finished in the window, through the `attempts_finished` index) and returns bounded samples of run times and
queue waits; this module turns them into rates and percentiles and renders them as text or JSON.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from typing import Any

from queuectl.textfmt import one_line
from queuectl.timefmt import human_duration, iso

#: Outcomes of an attempt as the attempts table records them (AttemptStatus values; `running` is never stored).
OUTCOMES = ("succeeded", "failed", "timed_out", "interrupted", "cancelled")
#: At most this many run times (and as many queue waits) are read for percentiles: the newest in the window.
DEFAULT_SAMPLES = 20_000


@dataclasses.dataclass(frozen=True, kw_only=True)
class FailureRow:
    """One failed or timed-out attempt, with its job's command (None if the job has been deleted since)."""

    job_id: str
    attempt: int
    finished_at: float
    status: str
    exit_code: int | None
    error: str | None
    command: str | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class StatsRow:
    """What `Store.stats(since=, until=)` returns: facts about the attempts that finished in [since, until).

    Only attempts are counted (an attempt row is written when the attempt ends), so the window is about work
    done, not about jobs enqueued.
    """

    since: float
    until: float
    #: Attempts that finished in the window, by outcome (succeeded, failed, timed_out, interrupted).
    attempts: dict[str, int]
    #: Failed or timed-out attempts of the window that spent their job's last retry (the job is now dead and
    #: this attempt is its latest run): jobs that went to the dead-letter queue in the window.
    buried: int
    #: Sum and maximum of the run times (finished_at - started_at) of the non-interrupted attempts of the window.
    run_sum_s: float
    run_max_s: float | None
    #: Run times of the newest non-interrupted attempts of the window, newest first, at most `samples` of them.
    run_samples: list[float]
    #: Queue waits (attempt start minus the time the job was due) of the newest attempts of the window that
    #: finished their job (the job is now completed or dead and this attempt is its latest run), at most `samples`.
    #: Only those: the due time of an earlier, retried attempt is not stored once the retry is scheduled.
    wait_samples: list[float]
    #: (command, failed + timed-out attempts), most failures first, at most `top`.
    top_failing: list[tuple[str, int]]
    #: The newest failed or timed-out attempts of the window, newest first, at most `top`.
    recent_failures: list[FailureRow]
    #: (bucket start, succeeded, failed + timed out) for every `bucket_s` bucket of the window that had
    #: attempts, oldest first; buckets start at `since + k * bucket_s`. Empty unless bucket_s was given.
    series: list[tuple[float, int, int]]


def fold_series(
    rows: Iterable[tuple[int, str, int]], *, since: float, bucket_s: float
) -> list[tuple[float, int, int]]:
    """(bucket number, attempt status, count) rows, as both stores' queries give them, into
    (bucket start, succeeded, failed or timed out), oldest first."""
    buckets: dict[int, list[int]] = {}
    for k, status, n in rows:
        counts = buckets.setdefault(int(k), [0, 0])
        if status == "succeeded":
            counts[0] += int(n)
        elif status in ("failed", "timed_out"):
            counts[1] += int(n)
    return [(since + k * bucket_s, ok, bad) for k, (ok, bad) in sorted(buckets.items())]


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100) of unsorted values: a value that was observed; None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(len(ordered) * p / 100))
    return ordered[min(rank, len(ordered)) - 1]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Stats:
    """The numbers `queuectl stats` shows, from one StatsRow."""

    since: float
    until: float
    completed: int
    failed: int
    timed_out: int
    dead: int
    interrupted: int
    retries: int
    #: succeeded / (succeeded + failed + timed out) attempts; None without any.
    success_rate: float | None
    #: Completed jobs per minute over the window.
    throughput_per_min: float
    run_p50_s: float | None
    run_p95_s: float | None
    run_max_s: float | None
    run_mean_s: float | None
    wait_p50_s: float | None
    wait_p95_s: float | None
    #: Whether the percentiles come from the newest attempts only (more finished than were sampled).
    sampled: bool
    top_failing: list[tuple[str, int]]
    recent_failures: list[FailureRow]
    series: list[tuple[float, int, int]]

    @property
    def window_s(self) -> float:
        return max(0.0, self.until - self.since)


def summarize(row: StatsRow) -> Stats:
    n = row.attempts
    succeeded, failed, timed_out = n.get("succeeded", 0), n.get("failed", 0), n.get("timed_out", 0)
    judged = succeeded + failed + timed_out
    window_min = max(row.until - row.since, 1e-9) / 60.0
    return Stats(
        since=row.since,
        until=row.until,
        completed=succeeded,
        failed=failed,
        timed_out=timed_out,
        dead=row.buried,
        interrupted=n.get("interrupted", 0),
        retries=max(0, failed + timed_out - row.buried),
        success_rate=None if judged == 0 else succeeded / judged,
        throughput_per_min=succeeded / window_min,
        run_p50_s=percentile(row.run_samples, 50),
        run_p95_s=percentile(row.run_samples, 95),
        run_max_s=row.run_max_s,
        run_mean_s=None if judged == 0 else row.run_sum_s / judged,
        wait_p50_s=percentile(row.wait_samples, 50),
        wait_p95_s=percentile(row.wait_samples, 95),
        sampled=len(row.run_samples) < judged,
        top_failing=row.top_failing,
        recent_failures=row.recent_failures,
        series=row.series,
    )


def _round(x: float | None, digits: int = 6) -> float | None:
    return None if x is None else round(x, digits)


def stats_dict(s: Stats) -> dict[str, Any]:
    """The JSON document of `queuectl stats --json` (times in seconds, instants in ISO-8601 UTC)."""
    return {
        "since": iso(s.since),
        "until": iso(s.until),
        "window_s": round(s.window_s, 3),
        "completed": s.completed,
        "failed": s.failed,
        "timed_out": s.timed_out,
        "dead": s.dead,
        "retries": s.retries,
        "interrupted": s.interrupted,
        "success_rate": _round(s.success_rate, 4),
        "throughput_per_min": round(s.throughput_per_min, 3),
        "run_time_s": {"p50": _round(s.run_p50_s), "p95": _round(s.run_p95_s), "max": _round(s.run_max_s),
                       "mean": _round(s.run_mean_s)},
        "queue_wait_s": {"p50": _round(s.wait_p50_s), "p95": _round(s.wait_p95_s)},
        "sampled": s.sampled,
        "top_failing": [{"command": c, "failures": k} for c, k in s.top_failing],
        "recent_failures": [
            {"job_id": f.job_id, "attempt": f.attempt, "finished_at": iso(f.finished_at), "status": f.status,
             "exit_code": f.exit_code, "error": f.error, "command": f.command}
            for f in s.recent_failures
        ],
    }


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.1f}%"


def stats_text(s: Stats, *, width: int = 80) -> list[str]:
    """The text of `queuectl stats`, every line at most `width` characters."""
    lines = [
        f"window: {human_duration(s.window_s)}  ({iso(s.since)} to {iso(s.until)})",
        f"completed {s.completed:,}  failed {s.failed:,}  timed out {s.timed_out:,}  dead {s.dead:,}",
        f"retries scheduled {s.retries:,}  interrupted {s.interrupted:,}",
        f"success rate {_pct(s.success_rate)}  throughput {s.throughput_per_min:,.1f} jobs/min",
        f"run time   p50 {human_duration(s.run_p50_s)}  p95 {human_duration(s.run_p95_s)}  "
        f"max {human_duration(s.run_max_s)}" + ("  (percentiles of the newest attempts)" if s.sampled else ""),
        f"queue wait p50 {human_duration(s.wait_p50_s)}  p95 {human_duration(s.wait_p95_s)}",
    ]
    if s.top_failing:
        lines.append("busiest commands by failures:")
        for command, count in s.top_failing:
            prefix = f"  {count:>7,}  "
            lines.append(prefix + one_line(command, width - len(prefix)))
    return [one_line(line, width) if len(line) > width else line for line in lines]
