"""The storage interface: one method per operation, each atomic on its own.

The engine, the API and the CLI only talk to this. A backend (SQLite, PostgreSQL) implements every method;
tests/test_store_contract.py is the contract each one must pass. Times are Unix seconds (float).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Collection, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Self

from queuectl.jobspec import NewJob
from queuectl.models import Attempt, Claim, Counts, EngineInfo, Job, JobState, Outcome

if TYPE_CHECKING:
    from queuectl.stats import StatsRow


class Store(abc.ABC):
    """A durable queue. Every method is one transaction; none is select-then-update from the caller."""

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect, apply pending migrations, refuse a schema newer than this code (StoreError)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections. Safe to call twice."""

    # ---- jobs: writing -------------------------------------------------------------------------------

    @abc.abstractmethod
    async def enqueue(self, jobs: Sequence[NewJob], *, now: float, replace: bool = False) -> list[str]:
        """Insert all jobs as pending in one transaction, or none of them.

        ConflictError if an id exists (unless replace, which overwrites a job that is not processing;
        a processing job is a ConflictError even then). Returns the ids in order.
        """

    @abc.abstractmethod
    async def claim_due(self, engine_id: str, *, now: float, limit: int) -> list[Claim]:
        """Atomically move up to `limit` due jobs (run_at <= now, pending or failed) to processing for this
        engine: highest priority first, then earliest run_at, then enqueue order. Two engines never get the
        same job. Each claim carries the number of the attempt it starts."""

    @abc.abstractmethod
    async def complete(self, claim: Claim, engine_id: str, outcome: Outcome) -> bool:
        """Record a successful attempt: job completed. False if the engine no longer holds the job."""

    @abc.abstractmethod
    async def schedule_retry(self, claim: Claim, engine_id: str, outcome: Outcome, *, retry_at: float) -> bool:
        """Record a failed attempt: job failed, due again at retry_at, attempts + 1."""

    @abc.abstractmethod
    async def bury(self, claim: Claim, engine_id: str, outcome: Outcome) -> bool:
        """Record a failed attempt that spent the last retry: job dead (the dead-letter queue)."""

    @abc.abstractmethod
    async def release(self, claim: Claim, engine_id: str, *, now: float, reason: str) -> bool:
        """Give a job back without counting the attempt (fast stop): pending, due now, attempt interrupted."""

    @abc.abstractmethod
    async def retry_dead(self, job_ids: Sequence[str] | None, *, now: float) -> list[str]:
        """Dead jobs back to pending, due now, attempts reset to 0 (history kept). None = every dead job.
        NotFoundError for an unknown id, ConflictError for a job that is not dead; then nothing changes."""

    @abc.abstractmethod
    async def delete(self, job_ids: Sequence[str]) -> list[str]:
        """Delete jobs and their attempts. NotFoundError for an unknown id, ConflictError for a processing
        job; then nothing changes. Returns the ids deleted."""

    @abc.abstractmethod
    async def purge(self, state: JobState, *, finished_before: float | None) -> list[str]:
        """Delete jobs in a terminal state (finished before the given time if set). Returns their ids."""

    # ---- jobs: reading -------------------------------------------------------------------------------

    @abc.abstractmethod
    async def get(self, job_id: str) -> Job:
        """One job; NotFoundError if there is none."""

    @abc.abstractmethod
    async def list_jobs(
        self, *, state: JobState | None = None, limit: int = 50, offset: int = 0, oldest_first: bool = False
    ) -> list[Job]:
        """Jobs, newest enqueued first unless oldest_first."""

    @abc.abstractmethod
    async def attempts(self, job_id: str) -> list[Attempt]:
        """Every recorded attempt of a job, oldest first."""

    @abc.abstractmethod
    async def counts(self, *, now: float) -> Counts:
        """Jobs per state (kept by counters, not a scan) and the age of the oldest due job."""

    @abc.abstractmethod
    async def next_due(self, *, limit: int) -> list[tuple[float, str]]:
        """(run_at, id) of the `limit` runnable jobs due soonest, soonest first: the scheduler's window."""

    @abc.abstractmethod
    async def change_token(self) -> int:
        """A number that changes whenever another connection commits: the engine's cheap fallback check."""

    async def subscribe(self, on_change: Callable[[], None]) -> None:
        """Call on_change (from the event loop) whenever another process changes the queue, where the backend
        can push that (PostgreSQL LISTEN). Best effort: engines also poll change_token. Default: nothing."""

    async def notify_change(self) -> None:
        """Tell subscribed engines elsewhere that the queue changed (PostgreSQL NOTIFY). Default: nothing;
        on one machine the API's wake-up datagram does this."""

    # ---- config ------------------------------------------------------------------------------------------

    @abc.abstractmethod
    async def config_items(self) -> dict[str, str]:
        """Stored config values by canonical key (defaults are not stored)."""

    @abc.abstractmethod
    async def config_set(self, key: str, value: str) -> None:
        """Store one validated value."""

    @abc.abstractmethod
    async def config_unset(self, key: str) -> bool:
        """Remove a stored value (back to the default). False if it was not set."""

    # ---- engines -----------------------------------------------------------------------------------------

    @abc.abstractmethod
    async def register_engine(self, engine: EngineInfo) -> None:
        """Add (or refresh) an engine's row."""

    @abc.abstractmethod
    async def heartbeat(self, engine_id: str, *, now: float) -> bool | None:
        """Refresh the heartbeat. Returns whether a stop was requested; None if the row is gone."""

    @abc.abstractmethod
    async def deregister_engine(self, engine_id: str) -> None:
        """Remove an engine's row at a clean exit."""

    @abc.abstractmethod
    async def engines(self) -> list[EngineInfo]:
        """Every registered engine, live or not."""

    @abc.abstractmethod
    async def request_stop(self, engine_ids: Collection[str]) -> None:
        """Flag engines to stop; each sees it at its next heartbeat."""

    @abc.abstractmethod
    async def running(self) -> list[Job]:
        """Jobs in processing, with the engine holding each."""

    @abc.abstractmethod
    async def recover(self, *, now: float, stale_before: float, dead_engine_ids: Collection[str]) -> list[str]:
        """Give back jobs held by engines that are gone: listed as dead, heartbeat older than stale_before,
        or no row at all. Their running attempt is recorded as interrupted (not counted), the job is pending
        and due now, and those engines' rows are removed. Returns the recovered job ids."""

    # ---- watching (stats, top, the dashboard, /metrics) ----------------------------------------------------
    # Not abstract: a backend without them still works for everything else (the callers report "not supported").

    async def stats(
        self, *, since: float, until: float, samples: int = 0, bucket_s: float | None = None, top: int = 0
    ) -> StatsRow:
        """Facts about the attempts that finished in [since, until), read in one transaction; see StatsRow.

        Work is proportional to the attempts in the window (an index on attempts.finished_at finds them) plus
        `samples`. On SQLite, as plain SQL (`a` = attempts, `j` = jobs, `W` = `a.finished_at >= :since AND
        a.finished_at < :until`):

        - attempts by outcome, with run time sum and max:
          `SELECT status, count(*), sum(finished_at - started_at), max(finished_at - started_at) FROM attempts a
          WHERE W GROUP BY status` (interrupted attempts are left out of the sum and max);
        - buried: `SELECT count(*) FROM attempts a JOIN jobs j ON j.id = a.job_id WHERE W AND a.status IN
          ('failed', 'timed_out') AND j.state = 'dead' AND j.runs = a.number`;
        - if samples > 0, run times: `SELECT finished_at - started_at FROM attempts a WHERE W AND status <>
          'interrupted' ORDER BY finished_at DESC LIMIT :samples`, and queue waits:
          `SELECT max(0, a.started_at - j.run_at) FROM attempts a JOIN jobs j ON j.id = a.job_id AND j.runs =
          a.number WHERE W AND j.state IN ('completed', 'dead') ORDER BY a.finished_at DESC LIMIT :samples`
          (a finished job keeps the due time of its last attempt in run_at);
        - if top > 0, the commands with most failed/timed-out attempts (`GROUP BY j.command ORDER BY count(*)
          DESC, j.command LIMIT :top`) and the newest failed/timed-out attempts with their job's command
          (LEFT JOIN: the job may be gone; `ORDER BY a.finished_at DESC LIMIT :top`);
        - if bucket_s is given, `SELECT CAST((finished_at - :since) / :bucket_s AS INTEGER) AS k, status,
          count(*) ... GROUP BY k, status`, bucket start = since + k * bucket_s.
        """
        raise NotImplementedError(f"{type(self).__name__} has no stats yet")

    async def search_jobs(
        self, *, text: str | None = None, state: JobState | None = None, below_seq: int | None = None,
        above_seq: int | None = None, limit: int = 50, newest_first: bool = True,
    ) -> list[Job]:
        """Jobs for the dashboard's table, by enqueue order (seq), at most `limit`:

        `SELECT * FROM jobs WHERE [state = :state] AND [seq < :below_seq] AND [seq > :above_seq]
        AND [(instr(id, :text) = 1 OR instr(command, :text) > 0)] ORDER BY seq DESC|ASC LIMIT :limit`

        Each bracket applies only when its argument is given. `text` matches a job whose id starts with the text
        or whose command contains it (case-sensitive; on PostgreSQL `starts_with(id, :text) OR
        strpos(command, :text) > 0`). Keyset paging: the caller pages with below_seq (older)
        or above_seq (newer), never OFFSET, and bounds a text search to a seq range (above_seq) so that a search
        that matches nothing does not read a million rows in one request."""
        raise NotImplementedError(f"{type(self).__name__} has no search_jobs yet")
