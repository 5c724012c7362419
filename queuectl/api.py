"""The operations users call: the CLI and the web dashboard both go through this, never to the store directly."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

from queuectl import config, paths, wakeup
from queuectl.errors import ConflictError, NotFoundError, StoreError, ValidationError
from queuectl.jobspec import NewJob, check_name
from queuectl.models import TERMINAL_STATES, Attempt, Counts, CronEntry, EngineInfo, Job, JobState, QueueInfo, Webhook
from queuectl.procs import host_key, pid_alive
from queuectl.store import Store, open_store

if TYPE_CHECKING:
    from queuectl.stats import Stats, StatsRow

#: An engine on another host whose heartbeat is older than this is gone (the engine's own stale_after_s).
ENGINE_STALE_AFTER_S = 30.0
#: SQLite's largest integer: a larger --limit or --offset cannot even be passed to it.
_MAX_SQL_INT = 2**63 - 1


@dataclasses.dataclass(frozen=True)
class Status:
    counts: Counts
    engines: list[EngineInfo]
    running: list[Job]
    queues: list[QueueInfo] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class JobDetail:
    job: Job
    attempts: list[Attempt]
    #: max_retries as it applies now (the job's own, or the configured default).
    effective_max_retries: int
    effective_timeout_s: float | None


def _check_concurrency(concurrency: int) -> None:
    if not 0 <= concurrency <= 100_000:
        raise ValidationError(f"--concurrency must be from 0 (no limit of its own) to 100000; got {concurrency}")


def parse_state(value: str) -> JobState:
    try:
        return JobState(value.strip().lower())
    except ValueError:
        raise ValidationError(
            f"unknown state {value!r}; states are: {', '.join(s.value for s in JobState)}"
        ) from None


class Queue:
    """A handle on one queue (a data directory, or a database URL). Use as `async with Queue(home) as q`."""

    def __init__(self, home: Path, database_url: str | None = None) -> None:
        self.home = home
        self.database_url = database_url
        self._store: Store | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            raise RuntimeError("Queue is not open")
        return self._store

    async def __aenter__(self) -> Self:
        paths.ensure_home(self.home)
        store = open_store(self.home, self.database_url)
        await store.open()
        self._store = store
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._store is not None:
            await self._store.close()
            self._store = None

    async def _wake(self, message: bytes = wakeup.CHANGED) -> None:
        wakeup.wake_engines(self.home, message)
        await self.store.notify_change()

    # ---- enqueue ---------------------------------------------------------------------------------------------

    async def enqueue(self, jobs: Sequence[NewJob], *, replace: bool = False, if_exists: str = "error") -> list[str]:
        """Add jobs; with if_exists="ignore", a job whose unique key is held by an active job gives that job's id."""
        if if_exists not in {"error", "ignore"}:
            raise ValidationError(f"--if-exists takes error or ignore; got {if_exists!r}")
        if not jobs:
            return []
        ids = await self.store.enqueue(jobs, now=time.time(), replace=replace, if_exists=if_exists)
        await self._wake()
        return ids

    # ---- reading ---------------------------------------------------------------------------------------------

    async def get(self, job_id: str) -> Job:
        return await self.store.get(job_id)

    async def list_jobs(
        self, *, state: JobState | None = None, limit: int = 50, offset: int = 0, oldest_first: bool = False,
        queue: str | None = None, tag: str | None = None,
    ) -> list[Job]:
        if not 1 <= limit <= _MAX_SQL_INT or not 0 <= offset <= _MAX_SQL_INT:
            raise ValidationError(f"limit must be from 1 to {_MAX_SQL_INT} and offset from 0 to {_MAX_SQL_INT}")
        if queue is not None:
            check_name(queue, "queue name")
        if tag is not None:
            check_name(tag, "a tag")
        return await self.store.list_jobs(state=state, limit=limit, offset=offset, oldest_first=oldest_first,
                                          queue=queue, tag=tag)

    async def settings(self) -> config.Settings:
        return config.resolve(await self.store.config_items())

    async def inspect(self, job_id: str) -> JobDetail:
        job = await self.store.get(job_id)
        settings = await self.settings()
        return JobDetail(
            job=job,
            attempts=await self.store.attempts(job_id),
            effective_max_retries=settings.max_retries if job.max_retries is None else job.max_retries,
            effective_timeout_s=job.timeout_s if job.timeout_s is not None else settings.job_timeout_s,
        )

    async def live_engines(self) -> list[EngineInfo]:
        """Registered engines that are still there: on this host, their pid is alive; elsewhere, their heartbeat
        is fresh. (A killed engine keeps its row until another engine recovers its jobs.)"""
        host, now = host_key(), time.time()
        return [e for e in await self.store.engines()
                if (pid_alive(e.pid, started_by=e.started_at) if e.host == host
                    else now - e.heartbeat_at < ENGINE_STALE_AFTER_S)]

    async def status(self) -> Status:
        return Status(
            counts=await self.store.counts(now=time.time()),
            engines=await self.live_engines(),
            running=await self.store.running(),
            queues=await self.store.queues(count_runnable=False),
        )

    async def log_path(self, job_id: str, attempt: int | None = None) -> tuple[Job, int, Path]:
        """The log file of an attempt (default: the latest one started)."""
        job = await self.store.get(job_id)
        if job.runs == 0:
            raise NotFoundError(f"job {job_id!r} has not run yet: no logs")
        number = job.runs if attempt is None else attempt
        if not 1 <= number <= job.runs:
            raise ValidationError(f"job {job_id!r} has attempts 1 to {job.runs}; got {number}")
        return job, number, paths.attempt_log_path(self.home, job_id, number)

    # ---- changing --------------------------------------------------------------------------------------------

    async def retry_dead(self, job_ids: Sequence[str] | None) -> list[str]:
        ids = await self.store.retry_dead(job_ids, now=time.time())
        if ids:
            await self._wake()
        return ids

    async def delete(self, job_ids: Sequence[str]) -> list[str]:
        deleted = await self.store.delete(job_ids)
        paths.remove_logs(self.home, deleted)
        await self._wake()
        return list(deleted)

    async def purge(self, state: JobState, *, older_than_s: float | None = None) -> list[str]:
        if state not in TERMINAL_STATES:
            raise ValidationError(f"purge takes --state completed, dead or cancelled; got {state}")
        before = None if older_than_s is None else time.time() - older_than_s
        purged = await self.store.purge(state, finished_before=before)
        paths.remove_logs(self.home, purged)
        return list(purged)

    # ---- queues, pause, cancel, wait -------------------------------------------------------------------------

    async def queues(self) -> list[QueueInfo]:
        return await self.store.queues()

    async def queue_add(self, name: str, *, concurrency: int = 0) -> bool:
        check_name(name, "queue name")
        _check_concurrency(concurrency)
        added = await self.store.queue_add(name, concurrency=concurrency)
        await self._wake()
        return added

    async def queue_set(self, name: str, *, concurrency: int) -> None:
        check_name(name, "queue name")
        _check_concurrency(concurrency)
        await self.store.queue_set(name, concurrency=concurrency)
        await self._wake()  # a raised limit lets engines start more at once

    async def set_paused(self, names: Sequence[str] | None, *, paused: bool) -> list[str]:
        """Pause (running jobs go on, no new starts) or resume queues; None = every queue."""
        for name in names or ():
            check_name(name, "queue name")
        changed = await self.store.set_paused(names, paused=paused)
        await self._wake()
        return changed

    async def cancel(self, job_ids: Sequence[str]) -> tuple[list[str], list[str]]:
        """Cancel jobs: returns (cancelled, being terminated by their engine)."""
        if not job_ids:
            raise ValidationError("give the ids of the jobs to cancel")
        done, running = await self.store.cancel(list(dict.fromkeys(job_ids)), now=time.time())
        await self._wake(wakeup.CANCEL if running else wakeup.CHANGED)
        return done, running

    async def wait(self, job_ids: Sequence[str], *, timeout_s: float | None = None,
                   poll_s: float = 0.05) -> dict[str, JobState]:
        """Block until every job has ended (completed, dead or cancelled); returns their states. NotFoundError
        for an unknown id (also one deleted meanwhile); TimeoutError when timeout_s passes first."""
        ids = list(dict.fromkeys(job_ids))
        if not ids:
            raise ValidationError("give the ids of the jobs to wait for")
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            states = await self.store.job_states(ids)
            missing = [i for i in ids if i not in states]
            if missing:
                raise NotFoundError(f"no job {missing[0]!r}")
            if all(s in TERMINAL_STATES for s in states.values()):
                return {i: states[i] for i in ids}
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError
            await asyncio.sleep(poll_s if deadline is None else max(0.0, min(poll_s, deadline - time.monotonic())))

    # ---- cron entries, webhooks ----------------------------------------------------------------------------

    async def cron_add(self, entry: CronEntry) -> CronEntry:
        await self.store.cron_add(entry)
        await self._wake()
        return entry

    async def crons(self) -> list[CronEntry]:
        return await self.store.crons()

    async def cron_remove(self, name: str) -> None:
        await self.store.cron_remove(name)
        await self._wake()

    async def cron_set_paused(self, name: str, *, paused: bool) -> None:
        await self.store.cron_set_paused(name, paused=paused, now=time.time())
        await self._wake()

    async def webhook_add(self, url: str, *, events: Sequence[str], secret: str | None) -> int:
        webhook_id = await self.store.webhook_add(url, events=events, secret=secret, now=time.time())
        await self._wake()
        return webhook_id

    async def webhooks(self) -> list[Webhook]:
        return await self.store.webhooks()

    async def webhook_remove(self, webhook_id: int) -> None:
        await self.store.webhook_remove(webhook_id)
        await self._wake()

    # ---- config ----------------------------------------------------------------------------------------------

    async def config_list(self) -> dict[str, config.InForce]:
        """Every key: the value in force in this process, and where it comes from (see config.InForce)."""
        return config.in_force(await self.store.config_items())

    async def config_get(self, name: str) -> str:
        """The value in force in this process (see config_list)."""
        key = config.canonical_key(name)
        return config.in_force(await self.store.config_items())[key.name].value

    async def config_set(self, name: str, value: str) -> tuple[str, str]:
        key, raw = config.validate(name, value)
        await self.store.config_set(key.name, raw)
        await self._wake()
        return key.name, raw

    async def config_unset(self, name: str) -> str:
        key = config.canonical_key(name)
        await self.store.config_unset(key.name)
        await self._wake()
        return key.name

    # ---- engines ---------------------------------------------------------------------------------------------

    async def stop_engines(self, *, wait: bool = False, timeout_s: float = 60.0) -> list[EngineInfo]:
        """Ask every engine to stop gracefully: SIGTERM to those on this host, a flag in the store for all
        (seen at their next heartbeat). With wait, return once they are gone (or the timeout passes)."""
        engines = await self.live_engines()
        if not engines:
            return []
        await self.store.request_stop([e.id for e in engines])
        host = host_key()
        for engine in engines:
            if engine.host == host:  # live_engines: pid_alive, which no pid <= 0 passes (kill(0) or kill(-1))
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(engine.pid, signal.SIGTERM)
        if wait:
            deadline = time.monotonic() + timeout_s
            ids = {e.id for e in engines}
            while time.monotonic() < deadline:
                alive = [e for e in await self.store.engines() if e.id in ids]
                alive = [e for e in alive if e.host != host or pid_alive(e.pid, started_by=e.started_at)]
                if not alive:
                    break
                await asyncio.sleep(0.1)
            else:
                raise ConflictError(f"engines still running after {timeout_s:g}s")
        return engines


    # ---- watching: stats, top, the dashboard, /metrics -----------------------------------------------------------

    async def stats_row(
        self, *, since: float, until: float, samples: int = 0, bucket_s: float | None = None, top: int = 0
    ) -> StatsRow:
        """The store's raw facts about the attempts that finished in [since, until) (see Store.stats)."""
        if not (since <= until) or samples < 0 or top < 0 or (bucket_s is not None and not bucket_s > 0):
            raise ValidationError("stats need since <= until, samples >= 0, top >= 0 and bucket_s > 0")
        try:
            return await self.store.stats(since=since, until=until, samples=samples, bucket_s=bucket_s, top=top)
        except NotImplementedError:
            raise StoreError("stats are not supported by this database backend yet") from None

    async def stats(
        self, since_s: float, *, samples: int | None = None, bucket_s: float | None = None, top: int = 5
    ) -> Stats:
        """Completed / failed / dead / timed-out counts, success rate, throughput, run-time and queue-wait
        percentiles and the busiest failing commands over the last since_s seconds."""
        from queuectl.stats import DEFAULT_SAMPLES, summarize

        if not since_s > 0:
            raise ValidationError(f"the stats window must be longer than 0 s; got {since_s:g}")
        now = time.time()
        row = await self.stats_row(since=now - since_s, until=now,
                                   samples=DEFAULT_SAMPLES if samples is None else samples, bucket_s=bucket_s, top=top)
        return summarize(row)

    async def search_jobs(
        self, *, text: str | None = None, state: JobState | None = None, below_seq: int | None = None,
        above_seq: int | None = None, limit: int = 50, newest_first: bool = True,
    ) -> list[Job]:
        """Jobs by enqueue order with keyset paging (below_seq: older, above_seq: newer), optionally in one state
        and matching text (an id prefix or a piece of the command). See Store.search_jobs."""
        if not 1 <= limit <= 1000:
            raise ValidationError(f"limit must be from 1 to 1000; got {limit}")
        if (below_seq is not None and below_seq < 0) or (above_seq is not None and above_seq < 0):
            raise ValidationError("page bounds must be >= 0")
        if text is not None and len(text) > 1000:
            raise ValidationError("search text is longer than 1000 characters")
        try:
            return await self.store.search_jobs(text=text or None, state=state, below_seq=below_seq,
                                                above_seq=above_seq, limit=limit, newest_first=newest_first)
        except NotImplementedError:
            raise StoreError("searching jobs is not supported by this database backend yet") from None
