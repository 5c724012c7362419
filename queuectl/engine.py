"""The engine: one event loop, N worker coroutines, a dispatcher that claims due jobs for idle workers, and a
few named background duties (heartbeat, recovery sweep, change watch). Knows the store, the heap and the
runner; knows no SQL.

The dispatcher is the only claimer and the only recorder of results: a worker whose command ended hands the
result over and is idle at once; the dispatcher's next round records every result handed over since the last one
and claims jobs for the idle workers, in one store call (one transaction on SQLite). It clears its wake event
*before* each round, so a wake-up that arrives meanwhile is never lost, and it claims at most as many jobs as
there are idle workers, plus, while a backlog of short jobs is due, claim_ahead_jobs(workers) ahead (see _ahead).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from queuectl import config, fdlimit, logsink, orphans, wakeup
from queuectl import engine_duties as duties
from queuectl import engine_results as results
from queuectl.aio import finish_even_if_cancelled
from queuectl.engine_options import EngineOptions, Summary, claim_ahead_jobs, install_child_watcher
from queuectl.errors import StoreError, StoreFullError, StoreGoneError, StoreUnavailableError
from queuectl.events import EventLog
from queuectl.models import Claim, EngineInfo, Finished, JobState, Outcome
from queuectl.notify import Notifier
from queuectl.paths import LOGS_DIR, attempt_log_file, check_text_path, loose_permissions
from queuectl.procs import host_key, pid_alive, unseen_namespace
from queuectl.runner import ResourceShortage, run_command
from queuectl.scheduler import DueHeap
from queuectl.store.base import Store
from queuectl.textfmt import one_line
from queuectl.timefmt import human_duration

T = TypeVar("T")
#: Each starts a graceful stop (a second, a fast one). SIGHUP: the engine's terminal was closed; by default it would
#: kill the engine outright, leaving its running jobs' results unrecorded (they would run again).
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: The variables that tell an attempt's processes, also those that left its group, when it is timed out, cancelled
#: or stopped.
_ATTEMPT_MARKS = ("QUEUECTL_JOB_ID", "QUEUECTL_ATTEMPT", orphans.ENGINE_ENV)
__all__ = ["Engine", "EngineOptions", "Summary", "install_child_watcher"]


class Engine:
    def __init__(self, store: Store, options: EngineOptions, log: EventLog | None = None) -> None:
        self.store = store
        self.options = options
        self.log = log or EventLog()
        self._owns_log = log is None  # then run() closes it (its writer thread) when it returns
        self.host = host_key()  # the host name, and the pid namespace inside a container (see host_key)
        self.id = orphans.engine_id(self.host, os.getpid(), secrets.token_hex(4))
        self.summary = Summary()
        self.settings = config.Settings()
        self._heap = DueHeap(options.window)
        self._wake = asyncio.Event()
        self._queue: asyncio.Queue[Claim | None] = asyncio.Queue()
        self._free = options.workers
        self._running: dict[str, Claim] = {}
        self._stopping = False
        self._stop_requested = asyncio.Event()
        self._fast_requested = asyncio.Event()  # a fast stop: running jobs' groups terminated, jobs given back
        #: Attempts that ended, in the order they ended, for the dispatcher's next round to record.
        self._finished: list[Finished] = []
        #: Moving average of recent attempts' run times: only short jobs are claimed ahead.
        self._recent_job_s = float("inf")
        self._claim_ahead = claim_ahead_jobs(options.workers)
        self._last_round_at = 0.0
        self._deferred = False
        # What is due is decided by the wall clock, which can be stepped back; _due_now never goes back.
        self._wall_seen, self._mono_seen = time.time(), time.monotonic()
        self._dirty = True
        self._last_refill = 0.0
        self._token = -1
        self._store_failures = 0
        self._backlog = False
        self._fatal: StoreError | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._grace_timer: asyncio.TimerHandle | None = None
        # A job that runs `queuectl enqueue` (a follow-up step) reaches this engine's queue, also when the engine
        # was given --home rather than QUEUECTL_HOME; absolute, since jobs run in other directories.
        self._home_variable = {"QUEUECTL_HOME": str(options.home.absolute())}
        self._logs_dir = str(options.home / LOGS_DIR)
        self.notifier = Notifier(options.home, self.log)
        #: Worker task running each job's command, while it runs: `queuectl cancel` cancels that task.
        self._in_command: dict[str, asyncio.Task[None]] = {}
        self._cancelling: set[str] = set()
        self._cancel_check = asyncio.Event()
        self._cron_wake = asyncio.Event()
        #: Commands in a row that could not start for want of resources, and until when (wall clock, as _due_now)
        #: nothing is claimed because of them (0: claiming).
        self._shortages = 0
        self._resume_at = 0.0
        self._signals: list[signal.Signals] = []
        self._listener = wakeup.Listener(options.home, self.id, self._on_wakeup)
        self._wakeups_lost = False  # the wake-up socket could not be bound (said once)
        #: Stored config values that cannot be used, by key: each is logged when it first appears.
        self._unusable_config: dict[str, str] = {}

    # ---- stopping --------------------------------------------------------------------------------------------

    def request_stop(self, *, fast: bool = False) -> None:
        """Graceful: claim nothing more, let running jobs finish. Fast (or a second request): terminate running
        jobs' process groups and give the jobs back without spending an attempt."""
        if self._stopping and not fast:
            fast = True
        if not self._stopping:
            self._stopping = True
            self._stop_requested.set()
            self.log.emit("stopping", f"engine {self.id} stopping: waiting for {len(self._running)} running "
                          "job(s) to finish (send SIGINT again to stop them now)", engine=self.id)
            if self.options.grace_s is not None:
                self._grace_timer = asyncio.get_running_loop().call_later(
                    self.options.grace_s, lambda: self.request_stop(fast=True))
        if fast and not self._fast_requested.is_set():
            self._fast_requested.set()
            self.log.emit("stopping_fast", f"engine {self.id} stopping now: terminating {len(self._running)} "
                          "running job(s)", engine=self.id)
            for task in self._workers:
                task.cancel()
        self._wake.set()

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        # Not a SIGHUP ignored from the start (`nohup queuectl run`): whoever started us asked for that.
        self._signals = [sig for sig in _STOP_SIGNALS
                         if sig != signal.SIGHUP or signal.getsignal(sig) != signal.SIG_IGN]
        for sig in self._signals:
            loop.add_signal_handler(sig, self.request_stop)

    def _remove_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in self._signals:
            loop.remove_signal_handler(sig)

    # ---- the run ----------------------------------------------------------------------------------------------

    async def run(self, *, handle_signals: bool = True) -> Summary:
        fdlimit.ensure_room(self.options.workers)  # before anything is claimed: a shortage would fail the jobs
        check_text_path(self.options.home)
        config.env_overrides()  # a bad QUEUECTL_<KEY> is refused now, not worked around at every decision
        undo_watcher = install_child_watcher()
        now = time.time()
        # Independent of each other, so asked together: a store runs them back to back, without a trip to the
        # event loop and back in between (start-up was a dozen such trips in a row). Both end before a failure is
        # raised: the settings read must not outlive a start that failed (it would log against a closed store),
        # and the child watcher is put back for whatever else the process runs.
        started = await asyncio.gather(self._reload_settings(), self.store.register_engine(EngineInfo(
            id=self.id, host=self.host, pid=os.getpid(), workers=self.options.workers, started_at=now,
            heartbeat_at=now)), return_exceptions=True)
        failed = next((result for result in started if isinstance(result, BaseException)), None)
        if failed is not None:
            undo_watcher()
            raise failed
        try:
            self._listener.open()
        except OSError as exc:
            self._no_wakeups(exc)
        if handle_signals:
            self._install_signal_handlers()
        background: list[asyncio.Task[None]] = []
        try:
            await self.store.subscribe(self._on_change)
            await self._recover()
            self._token = await self.store.change_token()
            for warning in loose_permissions(self.options.home):
                self.log.emit("insecure", f"WARNING: {warning}", warning=warning)
            self.log.emit("engine_started", f"engine {self.id} started with {self.options.workers} worker(s)",
                          engine=self.id, workers=self.options.workers)
            duties_by_name: dict[str, Callable[[], Awaitable[None]]] = {
                "heartbeat": lambda: self._every(self.options.heartbeat_interval_s, self._heartbeat),
                "recovery": lambda: self._every(self.options.recover_interval_s, self._recover),
                "change-watch": lambda: self._every(self.options.change_poll_s, self._check_changes),
                "retention": lambda: self._every(self.options.retention_interval_s, self._retention),
                "cancel-watch": lambda: duties.cancel_watch(
                    self.store, self.id, self._cancel_check, self._running, self._in_command, self._cancelling,
                    self._note_store_failure, self.options.cancel_check_min_interval_s, self.log),
                "cron": lambda: duties.cron_loop(
                    self.store, self._cron_wake, self._cron_enqueued, self._note_store_failure,
                    self.options.max_sleep_s, self.log),
                "webhooks": self.notifier.sender.run,
            }
            background = [asyncio.create_task(self._keep(name, duty), name=name)
                          for name, duty in duties_by_name.items()]
            self._workers = [asyncio.create_task(self._worker(), name=f"worker-{n}")
                             for n in range(self.options.workers)]
            await self._dispatch()
            for _ in self._workers:
                self._queue.put_nowait(None)
            await asyncio.gather(*self._workers, return_exceptions=True)
            await self.notifier.close()
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            self._listener.close()
            with contextlib.suppress(StoreError):
                await self.store.deregister_engine(self.id)
            if handle_signals:  # after the last await: a stop signal meanwhile is one more stop request, not death
                self._remove_signal_handlers()
            if self._grace_timer is not None:
                self._grace_timer.cancel()
            logsink.close_lingering()
            undo_watcher()
            if self._owns_log:
                self.log.close()
        if self._fatal is not None:
            raise self._fatal
        return self.summary

    async def _dispatch(self) -> None:
        """Rounds until the engine stops; in between, sleep until the next due time, a change from elsewhere or a
        worker finishing. While stopping, rounds only record, until every running job has ended."""
        while self._fatal is None:
            self._wake.clear()
            if self._fast_requested.is_set():
                await self._release_queued()
            claimed = await self._round()
            if self._stopping:
                if not self._running and not self._finished:
                    return
                await self._sleep(None)  # a finishing worker wakes us
                continue
            now = self._due_now()
            self._heap.pop_due(now)
            await self._maybe_refill()
            if (self.options.until_idle and not claimed and self._free == self.options.workers
                    and not self._finished and not self._claims_paused() and await self._idle()):
                return
            await self._sleep(self._sleep_s(now))

    def _ahead(self) -> int:
        """Jobs a round may claim beyond the idle workers: while a backlog is due and jobs are short, so that a
        worker whose command ended starts the next at once instead of after a store round."""
        short = self._recent_job_s < self.settings.claim_ahead_below_s  # config claim-ahead-below
        return self._claim_ahead if self._backlog and short and not self._stopping else 0

    async def _round(self) -> int:
        """Record the attempts that ended and claim jobs for the idle workers (and ahead, see _ahead), in one store
        call. Returns how many jobs were claimed."""
        self._deferred = False
        if not self._finished and (self._stopping or self._free + self._ahead() <= 0 or self._claims_paused()):
            return 0
        ahead = self._claim_ahead
        if (not self._stopping and self._queue.qsize() >= max(1, ahead // 2) and len(self._finished) < ahead
                and time.monotonic() - self._last_round_at < self.options.round_defer_s):
            # Workers have jobs claimed ahead: let a few more attempts end, and record them in one transaction. At
            # half the jobs ahead started, no later: the other half covers the round's trip to the store.
            self._deferred = True
            return 0
        self._last_round_at = time.monotonic()
        finished, self._finished = self._finished, []
        limit = 0

        def op() -> Awaitable[tuple[list[bool], list[Claim]]]:
            # Each try claims for the workers idle then (more become idle while a store is failing). The jobs this
            # engine holds in the store (claimed, not yet recorded as ended) never pass workers + claim_ahead_jobs:
            # running, claimed ahead, or ended with their result waiting (those in self._finished; this batch's
            # are recorded in the same transaction as the claim).
            nonlocal limit
            limit = 0 if self._stopping or self._claims_paused() else max(
                0, self._free + self._ahead() - len(self._finished))
            return self.store.record(self.id, finished, now=self._due_now(), claim_limit=limit,
                                     queues=self.options.queues)

        # With results to record, only a fast stop gives up on a failing store; a claim alone, any stop.
        done = await self._store_call(op, default=None,
                                      give_up=self._fast_requested if finished else self._stop_requested)
        if done is None:
            for f in finished:
                self.log.emit("not_recorded", f"{f.claim.job.id}: result of attempt {f.claim.attempt} not recorded "
                              "(the store failed); the job runs again when it is recovered", job=f.claim.job.id,
                              attempt=f.claim.attempt)
            return 0
        oks, claims = done
        for f, ok in zip(finished, oks, strict=True):
            self._recorded(f, ok)
        # A full claim means more may be due: the next free worker asks the store again, so the window
        # (only there to sleep until the next due time) need not be re-read until a claim comes back short.
        if limit > 0:
            self._backlog = len(claims) == limit
        for claim in claims:
            self._free -= 1
            self._running[claim.job.id] = claim
            self._queue.put_nowait(claim)
        return len(claims)

    async def _release_queued(self) -> None:
        """A fast stop cancelled the workers: claims no worker took are given back."""
        while not self._queue.empty():
            claim = self._queue.get_nowait()
            if claim is None:
                continue
            self._running.pop(claim.job.id, None)
            self._free += 1
            await self._release(claim)

    def _claims_paused(self) -> bool:
        """Whether claiming is paused after commands could not start for want of resources (see _short_of)."""
        if self._resume_at and self._due_now() >= self._resume_at:
            self._resume_at = 0.0
        return self._resume_at > 0.0

    def _due_now(self) -> float:
        """Wall-clock time that decides what is due, never going back while the engine runs: after the clock is
        stepped back, due jobs still run (delayed ones may run early by the step) instead of stalling."""
        wall, mono = time.time(), time.monotonic()
        now = max(wall, self._wall_seen + (mono - self._mono_seen))
        self._wall_seen, self._mono_seen = now, mono
        return now

    def _sleep_s(self, now: float) -> float | None:
        if self._deferred:
            return max(0.0, self._last_round_at + self.options.round_defer_s - time.monotonic())
        if self._free <= 0:
            return None  # a finishing worker wakes us
        timeout = self.options.max_sleep_s
        if self._resume_at:
            timeout = min(timeout, max(0.0, self._resume_at - now) + 0.0005)
        deadline = self._heap.next_deadline()
        if deadline is not None:
            timeout = min(timeout, max(0.0, deadline - now) + 0.0005)
        if self._dirty:
            wait = self._last_refill + self.options.refill_min_interval_s - time.monotonic()
            timeout = min(timeout, max(0.0, wait))
        return timeout

    async def _sleep(self, timeout_s: float | None) -> None:
        if self._wake.is_set():
            return
        # asyncio.timeout, not wait_for: wait_for wraps the wait in a task of its own, at every sleep.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._wake.wait()

    async def _idle(self) -> bool:
        counts = await self._store_call(lambda: self.store.counts(now=self._due_now()), default=None)
        if counts is None:
            return False
        if counts.by_state.get(JobState.FAILED, 0) == 0 and counts.oldest_pending_age_s is None:
            return not await self._held_in_doubt()
        # Due work may all be in paused queues or in queues this engine does not serve.
        work = await self._store_call(
            lambda: self.store.has_work(now=self._due_now(), served=self.options.queues), default=True)
        return not work and not await self._held_in_doubt()

    async def _held_in_doubt(self) -> bool:
        """Whether an engine that may be dead holds jobs: one of this host name in another pid namespace (this
        container before its restart, say), whose pid cannot be checked from here, with a heartbeat not yet stale.
        --until-idle waits for those jobs: once its heartbeat is stale they are recovered, and run here."""
        now = time.time()
        engines = await self._store_call(self.store.engines, default=None)
        if engines is None:
            return True
        doubtful = {e.id for e in engines if unseen_namespace(e.host, self.host)
                    and now - e.heartbeat_at < self.options.stale_after_s}
        if not doubtful:
            return False
        held = await self._store_call(lambda: self.store.list_jobs(state=JobState.PROCESSING, limit=1_000_000),
                                      default=None)
        return held is None or any(job.engine_id in doubtful for job in held)

    # ---- changes from elsewhere -----------------------------------------------------------------------------

    def _on_wakeup(self, received: bytes) -> None:
        self._on_change(cancel=wakeup.CANCEL in received)

    def _on_change(self, *, cancel: bool = True) -> None:
        """Something changed elsewhere (cancel=False: a datagram that said it was not a cancel)."""
        self._dirty = True
        self._wake.set()
        self._cron_wake.set()
        if cancel and self._running:
            self._cancel_check.set()

    def _no_wakeups(self, exc: OSError) -> None:
        """Still correct without the socket: changes are then seen by the change check. Said once in a row."""
        if not self._wakeups_lost:
            self.log.emit("no_wakeups", f"no wake-up socket ({exc}): changes from other shells are seen within "
                          f"{self.options.change_poll_s:g}s", error=str(exc))
        self._wakeups_lost = True

    async def _check_changes(self) -> None:
        try:
            if self._listener.check():
                self.log.emit("wakeups_rebound", f"the wake-up socket {self._listener.path} was removed; bound "
                              "again", path=str(self._listener.path))
                self._on_change()  # a wake-up may have been missed meanwhile
        except OSError as exc:
            self._no_wakeups(exc)
        else:
            self._wakeups_lost = False
        token = await self.store.change_token()
        if token != self._token:
            self._token = token
            self._on_change()

    async def _maybe_refill(self) -> None:
        if not (self._dirty or (self._heap.needs_refill and not self._backlog)):
            return
        if time.monotonic() - self._last_refill < self.options.refill_min_interval_s:
            return
        self._dirty = False
        self._last_refill = time.monotonic()
        soonest = await self._store_call(lambda: self.store.next_due(limit=self.options.window), default=None)
        if soonest is not None:
            self._heap.rebuild(soonest)
        await self._reload_settings()

    async def _reload_settings(self) -> None:
        try:
            stored = await self.store.config_items()
            self.settings = config.resolve(stored)
            self.notifier.configure(self.settings, await self.store.webhooks())
        except StoreError as exc:
            self.log.emit("store_error", f"cannot read config: {exc}", error=str(exc))
            return
        except Exception as exc:  # a fault of ours in reading it: the settings in force stay, and it is said
            self.log.emit("config_error", f"cannot use the stored config, keeping the settings in force: {exc!r}",
                          error=repr(exc))
            return
        # A value stored by something other than `config set` leaves its key at the default: said once, not at
        # every reload (every change seen).
        unusable = config.unusable(stored)
        for name, why in unusable.items():
            if self._unusable_config.get(name) != why:
                self.log.emit("config_error", f"ignoring the stored value of {name}, using its default: {why}",
                              key=name, error=why)
        self._unusable_config = unusable

    # ---- workers ----------------------------------------------------------------------------------------------

    async def _worker(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        while True:
            claim = await self._queue.get()
            if claim is None:
                return
            try:
                await self._execute(claim, task)
            except Exception as exc:  # our own fault for this one job: fail it, keep this worker and the engine going
                self._internal_error(claim, exc)
            finally:  # idle at once: its result, if any, is in self._finished for the next round
                self._running.pop(claim.job.id, None)
                self._free += 1
                self._wake.set()

    async def _execute(self, claim: Claim, task: asyncio.Task[None]) -> None:
        job = claim.job
        if job.id in self._cancelling:  # `queuectl cancel` reached it while it waited, claimed ahead: never started
            self._cancelling.discard(job.id)
            now = time.time()
            outcome = Outcome(exit_code=None, error="cancelled by `queuectl cancel` before it started",
                              started_at=now, finished_at=now)
            self._finished.append(Finished(claim=claim, outcome=outcome, state=JobState.CANCELLED))
            return
        if job.damaged is not None:  # a row written by something other than queuectl: fail it, do not guess
            now = time.time()
            outcome = Outcome(exit_code=None, error=f"cannot start: {job.damaged}", started_at=now, finished_at=now)
            self._finished.append(results.decide(claim, outcome, self.settings))
            return
        timeout_s = job.timeout_s if job.timeout_s is not None else self.settings.job_timeout_s
        self.log.emit("started", f"{job.id} started (attempt {claim.attempt}): {one_line(job.command, 60)}",
                      job=job.id, attempt=claim.attempt, command=job.command)
        # The job's own variables cannot hide ours (but QUEUECTL_HOME, to reach another queue): the engine mark is
        # how a dead engine's commands are found. Without variables of its own, the job runs in the engine's
        # environment as it is, which spares the spawn encoding it (see exports).
        attempt = str(claim.attempt)
        variables = {**({} if "QUEUECTL_HOME" in job.env else self._home_variable), "QUEUECTL_JOB_ID": job.id,
                     "QUEUECTL_ATTEMPT": attempt, orphans.ENGINE_ENV: self.id}
        env = {**os.environ, **job.env} if job.env else None
        started_at = time.time()
        log_path = attempt_log_file(self._logs_dir, job.id, claim.attempt)
        self._in_command[job.id] = task
        try:
            try:
                outcome = await run_command(
                    job.command, cwd=job.cwd, env=env, variables=variables, timeout_s=timeout_s, log_path=log_path,
                    kill_grace_s=self.settings.kill_grace_s, log_max_bytes=self.settings.log_max_bytes,
                    marked_by=_ATTEMPT_MARKS)
            finally:
                del self._in_command[job.id]  # from here on, a cancel request no longer reaches this task
        except ResourceShortage as exc:
            await finish_even_if_cancelled(self._short_of(claim, str(exc)))  # a fast stop must not lose the job
            return
        except asyncio.CancelledError:
            # `queuectl cancel`, not a stop: the group is gone
            if job.id in self._cancelling and not self._fast_requested.is_set():
                self._cancelling.discard(job.id)
                task.uncancel()
                outcome = Outcome(exit_code=None, error="cancelled by `queuectl cancel`", log_path=log_path,
                                  started_at=started_at, finished_at=time.time())
                self._finished.append(Finished(claim=claim, outcome=outcome, state=JobState.CANCELLED))
                return
            await finish_even_if_cancelled(self._release(claim))
            raise
        except Exception as exc:  # our own fault once the attempt began: it keeps its start and its log
            self._internal_error(claim, exc, started_at=started_at, log_path=log_path)
            return
        self._cancelling.discard(job.id)  # flagged, but the command ended first: its result stands
        self._shortages = 0
        took_s = outcome.finished_at - outcome.started_at
        self._recent_job_s = took_s if self._recent_job_s == float("inf") else 0.8 * self._recent_job_s + 0.2 * took_s
        self._finished.append(results.decide(claim, outcome, self.settings))

    def _internal_error(self, claim: Claim, exc: Exception, *, started_at: float | None = None,
                        log_path: str | None = None) -> None:
        """A fault of ours while running this job (not its command's): logged with the job's id, and the attempt
        fails like any other, so that the job is retried or dead, never lost or left processing."""
        job_id = claim.job.id
        self.log.emit("internal_error", f"{job_id} internal error: {exc!r}", job=job_id, error=repr(exc))
        self._cancelling.discard(job_id)
        now = time.time()
        outcome = Outcome(exit_code=None, error=f"internal error: {exc!r}", log_path=log_path,
                          started_at=now if started_at is None else started_at, finished_at=now)
        try:
            finished = results.decide(claim, outcome, self.settings)
        except Exception:  # what broke the attempt may break the decision too: then the dead-letter queue, in sight
            finished = Finished(claim=claim, outcome=outcome, state=JobState.DEAD)
        self._finished.append(finished)

    def _cron_enqueued(self, ids: list[str]) -> None:
        self.log.emit("cron", f"cron enqueued {', '.join(ids)}", jobs=ids)
        self._dirty = True
        self._wake.set()

    async def _release(self, claim: Claim) -> None:
        ok = await self._store_call(lambda: self.store.release(
            claim, self.id, now=time.time(), reason="interrupted: the engine was stopped during the attempt"),
            default=False)
        if ok:
            self.summary.released += 1
            self.log.emit("released", f"{claim.job.id} given back to the queue (attempt not counted)",
                          job=claim.job.id, attempt=claim.attempt)

    async def _short_of(self, claim: Claim, why: str) -> None:
        """The command could not start for want of files, processes or memory: not the job's fault, so its attempt
        is not counted. The job goes back for when claiming resumes, and no job is claimed until then (each would
        fail alike): 1 s after the first such failure, doubling with each pause in a row up to 30 s (EngineOptions).
        The pauses in a row end when a command starts."""
        now = self._due_now()
        if not self._claims_paused():  # else a job claimed before the pause: it waits for the same end
            self._shortages += 1
            self._resume_at = now + min(self.options.shortage_pause_s * 2 ** min(self._shortages - 1, 20),
                                        self.options.shortage_pause_max_s)
        run_at = self._resume_at
        ok = await self._store_call(lambda: self.store.release(
            claim, self.id, now=now, reason=f"not started: {why} (the engine was short of it; not counted)",
            run_at=run_at), default=False)
        if ok:
            self.summary.released += 1
            self._heap.push(run_at, claim.job.id)
            self.log.emit("no_resources", f"{claim.job.id} could not start: {why}; given back without counting the "
                          f"attempt, no job starts for {human_duration(run_at - now)}", job=claim.job.id,
                          attempt=claim.attempt, error=why, retry_in_s=round(run_at - now, 3))

    def _recorded(self, f: Finished, ok: bool) -> None:
        """A round recorded this attempt's end (ok) or found the job taken over by another engine meanwhile."""
        if ok:
            results.report(f, self.summary, self.log, self.notifier, self._heap)
        elif self._fatal is None:
            self.log.emit("lost_claim", f"{f.claim.job.id}: result of attempt {f.claim.attempt} not recorded: the "
                          "job was given to another engine meanwhile", job=f.claim.job.id, attempt=f.claim.attempt)

    # ---- background duties ------------------------------------------------------------------------------------

    async def _keep(self, name: str, duty: Callable[[], Awaitable[None]]) -> None:
        """Run a background duty for as long as the engine runs. A fault of our own in it (not the store's: each
        duty meets those) is logged and the duty started again, 1 s later, doubling to 60 s: a heartbeat that died
        in silence would make this engine look gone, and its running jobs be recovered by another engine."""
        pause_s = 1.0
        while True:
            try:
                await duty()
                return
            except Exception as exc:
                self.log.emit("internal_error", f"{name}: internal error: {exc!r}; starting it again in "
                              f"{human_duration(pause_s)}", duty=name, error=repr(exc))
            await asyncio.sleep(pause_s)
            pause_s = min(2 * pause_s, 60.0)

    async def _every(self, interval_s: float, duty: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await duty()
            except StoreError as exc:
                self._note_store_failure(exc)

    async def _heartbeat(self) -> None:
        stop = await self.store.heartbeat(self.id, now=time.time())
        self._store_failures = 0
        if stop is None:  # our row was removed (we looked dead to someone): register again
            now = time.time()
            await self.store.register_engine(EngineInfo(
                id=self.id, host=self.host, pid=os.getpid(), workers=self.options.workers, started_at=now,
                heartbeat_at=now))
        elif stop and not self._stopping:
            self.log.emit("stop_requested", "stop requested by `queuectl worker stop`", engine=self.id)
            self.request_stop()

    async def _retention(self) -> None:
        deleted = await duties.retention_sweep(self.store, self.options.home, self.settings, time.time())
        if deleted:
            self.log.emit("retention", "retention: deleted " + ", ".join(
                f"{n} {state.value}" for state, n in deleted.items()) + " job(s) past their retention",
                deleted={state.value: n for state, n in deleted.items()})

    async def _recover(self) -> None:
        # The /proc scan (two files per process) runs in a thread while the store lists the engines; both are done
        # before any job is given back, so that a dead engine's commands are gone before their jobs run again.
        killed, engines = await asyncio.gather(
            asyncio.to_thread(orphans.kill_leftovers, self.host, self.id), self.store.engines())
        if killed:
            self.log.emit("orphans_killed", f"killed the still-running commands of {len(killed)} job(s) left "
                          f"by a dead engine: {', '.join(killed[:10])}", jobs=killed)
        now = time.time()
        dead = [e.id for e in engines
                if e.host == self.host and e.id != self.id and not pid_alive(e.pid, started_by=e.started_at)]
        recovered = await self.store.recover(
            now=now, stale_before=now - self.options.stale_after_s, dead_engine_ids=dead)
        if recovered:
            self.summary.recovered += len(recovered)
            self.log.emit("recovered", f"recovered {len(recovered)} job(s) left running by a stopped engine: "
                          f"{', '.join(recovered[:10])}{' ...' if len(recovered) > 10 else ''}",
                          jobs=recovered)
            self._wake.set()

    # ---- store failures ---------------------------------------------------------------------------------------

    async def _store_call(
        self, op: Callable[[], Awaitable[T]], *, default: T, give_up: asyncio.Event | None = None
    ) -> T:
        """Retry a store operation with backoff; after max_store_failures of it in a row (a heartbeat succeeding
        meanwhile does not reset the count), stop the engine. With give_up (a stop request), a failing operation
        is abandoned once that is set, so that SIGTERM is obeyed while the database fails."""
        delay_s = 0.5
        failures = 0
        while self._fatal is None:
            try:
                result = await op()
            except StoreError as exc:
                failures += 1
                self._store_failures = max(self._store_failures, failures - 1)
                self._note_store_failure(exc)
                if give_up is not None:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(give_up.wait(), delay_s)
                    if give_up.is_set():
                        return default
                else:
                    await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, 30.0 if isinstance(exc, StoreFullError | StoreUnavailableError) else 8.0)
                continue
            self._store_failures = 0
            return result
        return default

    def _note_store_failure(self, exc: StoreError) -> None:
        self._store_failures += 1
        self.log.emit("store_error", f"store error ({self._store_failures}): {exc}", error=str(exc))
        if self._fatal is not None:
            return
        if isinstance(exc, StoreFullError | StoreUnavailableError):
            # Nothing is lost while we wait: claims fail so nothing new starts, running jobs go on, and their
            # results are recorded once space or the connection returns.
            return
        if isinstance(exc, StoreGoneError):
            self._fatal = exc
        elif self._store_failures >= self.options.max_store_failures:
            self._fatal = StoreError(f"giving up after {self._store_failures} store errors in a row: {exc}")
        else:
            return
        self.request_stop(fast=True)
