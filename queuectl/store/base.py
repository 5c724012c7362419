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
    async def enqueue(
        self, jobs: Sequence[NewJob], *, now: float, replace: bool = False, if_exists: str = "error"
    ) -> list[str]:
        """Insert all jobs in one transaction, or none of them: pending, or waiting if a job it runs after
        (`after`, which must exist: NotFoundError; not dead or cancelled: ConflictError) has not completed.
        Each new queue name is registered.

        ConflictError if an id exists (unless replace, which overwrites a job that is not processing;
        a processing job is a ConflictError even then, and so is a replace that would make a dependency cycle).
        A unique_key held by an active job is a ConflictError naming it, or with if_exists="ignore" that job's
        id is returned in place of the new one. Returns the ids in order.
        """

    @abc.abstractmethod
    async def claim_due(
        self, engine_id: str, *, now: float, limit: int, queues: Collection[str] | None = None
    ) -> list[Claim]:
        """Atomically move up to `limit` due jobs (run_at <= now, pending or failed) to processing for this
        engine: highest priority first, then earliest run_at, then enqueue order. Two engines never get the
        same job. Each claim carries the number of the attempt it starts. Jobs of paused queues are left, a
        queue with a concurrency never has more than that many processing (over all engines), and with
        `queues` only those queues are served."""

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
    async def bury_cancelled(self, claim: Claim, engine_id: str, outcome: Outcome) -> bool:
        """Record an attempt that `queuectl cancel` terminated: job cancelled, its waiting dependants too."""

    async def record(
        self, engine_id: str, finished: Sequence[Finished], *, now: float, claim_limit: int = 0,
        queues: Collection[str] | None = None,
    ) -> tuple[list[bool], list[Claim]]:
        """Record ended attempts (each as complete, schedule_retry, bury or bury_cancelled would: False where the
        engine no longer holds the job), then claim up to claim_limit due jobs as claim_due does. The engine's
        one store round per wake-up: a backend may do it all in one transaction (SQLite does), and then a
        failure records none of it. This default does one operation after the other."""
        oks = []
        for f in finished:
            if f.state == JobState.COMPLETED:
                ok = await self.complete(f.claim, engine_id, f.outcome)
            elif f.state == JobState.FAILED:
                assert f.retry_at is not None
                ok = await self.schedule_retry(f.claim, engine_id, f.outcome, retry_at=f.retry_at)
            elif f.state == JobState.DEAD:
                ok = await self.bury(f.claim, engine_id, f.outcome)
            else:
                ok = await self.bury_cancelled(f.claim, engine_id, f.outcome)
            oks.append(ok)
        claims = await self.claim_due(engine_id, now=now, limit=claim_limit, queues=queues) if claim_limit > 0 else []
        return oks, claims

    @abc.abstractmethod
    async def release(
        self, claim: Claim, engine_id: str, *, now: float, reason: str, run_at: float | None = None
    ) -> bool:
        """Give a job back without counting the attempt (a fast stop; a command the engine could not start for
        want of files, processes or memory): pending, due at run_at (default now), attempt interrupted."""

    @abc.abstractmethod
    async def retry_dead(self, job_ids: Sequence[str] | None, *, now: float) -> list[str]:
        """Dead jobs back to pending, due now, attempts reset to 0 (history kept). None = every dead job.
        NotFoundError for an unknown id, ConflictError for a job that is not dead; then nothing changes."""

    @abc.abstractmethod
    async def delete(self, job_ids: Sequence[str]) -> dict[str, int]:
        """Delete jobs and their attempts. NotFoundError for an unknown id, ConflictError for a processing
        job; then nothing changes. Returns the ids deleted, in the order given, each with its last attempt
        number (its runs: the caller removes the attempts' log files by name)."""

    @abc.abstractmethod
    async def purge(
        self, state: JobState, *, finished_before: float | None, limit: int | None = None
    ) -> dict[str, int]:
        """Delete jobs in a terminal state (finished before the given time if set), at most `limit` of them, the
        oldest enqueued first. Returns their ids, oldest first, each with its last attempt number (as delete)."""

    # ---- jobs: reading -------------------------------------------------------------------------------

    @abc.abstractmethod
    async def get(self, job_id: str) -> Job:
        """One job; NotFoundError if there is none."""

    @abc.abstractmethod
    async def list_jobs(
        self, *, state: JobState | None = None, limit: int = 50, offset: int = 0, oldest_first: bool = False,
        queue: str | None = None, tag: str | None = None,
    ) -> list[Job]:
        """Jobs, newest enqueued first unless oldest_first; only of one state, queue or tag if given."""

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

    # ---- queues, cancellation --------------------------------------------------------------------------------

    @abc.abstractmethod
    async def queues(self, *, count_runnable: bool = True) -> list[QueueInfo]:
        """Every known queue, by name, with its processing count and, if count_runnable, its runnable (pending +
        failed) count, which costs a read of every runnable job's index entry (status, the dashboard and /metrics,
        read every second, ask without it; `queue list` asks with it)."""

    @abc.abstractmethod
    async def queue_add(self, name: str, *, concurrency: int = 0) -> bool:
        """Register a queue; False if it existed (then nothing changes)."""

    @abc.abstractmethod
    async def queue_set(self, name: str, *, concurrency: int) -> None:
        """Set a queue's concurrency (0: no limit of its own). NotFoundError for an unknown queue."""

    @abc.abstractmethod
    async def set_paused(self, names: Sequence[str] | None, *, paused: bool) -> list[str]:
        """Pause (no new starts) or resume queues; None = every queue. NotFoundError for an unknown one, then
        nothing changes. Returns the queues whose state changed."""

    @abc.abstractmethod
    async def has_work(self, *, now: float, served: Collection[str] | None) -> bool:
        """Whether a job is due now, or a retry is scheduled, in a queue that is not paused (among `served`)."""

    @abc.abstractmethod
    async def cancel(self, job_ids: Sequence[str], *, now: float) -> tuple[list[str], list[str]]:
        """Cancel jobs: pending, waiting and failed ones at once (their waiting dependants with them), running
        ones by flagging them for their engine. NotFoundError / ConflictError (a finished job) change nothing.
        Returns (cancelled now, being cancelled by their engine)."""

    @abc.abstractmethod
    async def cancel_requests(self, engine_id: str) -> list[str]:
        """Ids of this engine's running jobs that `cancel` flagged."""

    @abc.abstractmethod
    async def job_states(self, job_ids: Sequence[str]) -> dict[str, JobState]:
        """The state of each id that exists."""

    # ---- cron entries, webhooks ------------------------------------------------------------------------------

    @abc.abstractmethod
    async def cron_add(self, entry: CronEntry) -> None:
        """Store a new entry; ConflictError if the name exists."""

    @abc.abstractmethod
    async def crons(self) -> list[CronEntry]:
        """Every entry, by name."""

    @abc.abstractmethod
    async def cron_remove(self, name: str) -> None:
        """NotFoundError if there is no such entry. Jobs it made stay."""

    @abc.abstractmethod
    async def cron_set_paused(self, name: str, *, paused: bool, now: float) -> None:
        """Pause or resume an entry; resuming makes its next due time the first one after now."""

    @abc.abstractmethod
    async def cron_tick(self, *, now: float) -> CronTick:
        """In one transaction, for every entry due at now: enqueue its job (cron.plan_row decides, skipping missed
        runs unless catch_up) and advance it; concurrent ticks never enqueue a due time twice. Returns the ids
        enqueued, the soonest next due time of an active entry, and the entries that could not be read."""

    @abc.abstractmethod
    async def webhook_add(self, url: str, *, events: Sequence[str], secret: str | None, now: float) -> int:
        """Store a webhook; returns its id."""

    @abc.abstractmethod
    async def webhooks(self) -> list[Webhook]:
        """Every webhook, by id."""

    @abc.abstractmethod
    async def webhook_remove(self, webhook_id: int) -> None:
        """NotFoundError if there is no such webhook."""

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
