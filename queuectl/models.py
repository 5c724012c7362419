"""The shared model: jobs, attempts, engines. No I/O.

Every time in this module is a Unix timestamp in seconds (float, UTC); JSON output shows ISO-8601 UTC.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
from collections.abc import Mapping
from typing import Any, NamedTuple, Self

from queuectl.textfmt import one_line


class JobState(enum.StrEnum):
    PENDING = "pending"  # waiting for its run_at
    WAITING = "waiting"  # waiting for the jobs it was enqueued --after to complete
    PROCESSING = "processing"  # claimed by an engine, command running
    COMPLETED = "completed"  # exit code 0
    FAILED = "failed"  # last attempt failed, a retry is scheduled at run_at
    DEAD = "dead"  # retries spent: the dead-letter queue
    CANCELLED = "cancelled"  # by `queuectl cancel`, or because a job it was --after ended dead or cancelled


#: States a job never leaves by itself.
TERMINAL_STATES = frozenset({JobState.COMPLETED, JobState.DEAD, JobState.CANCELLED})
#: States in which a job still holds its unique key and can still run.
ACTIVE_STATES = frozenset({JobState.PENDING, JobState.WAITING, JobState.PROCESSING, JobState.FAILED})


class AttemptStatus(enum.StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # non-zero exit, signal, could not start
    TIMED_OUT = "timed_out"
    INTERRUPTED = "interrupted"  # engine crashed or was stopped fast; does not count against retries
    CANCELLED = "cancelled"  # `queuectl cancel` terminated it


def _own_fields(cls: type, row: Mapping[str, Any]) -> dict[str, Any]:
    """The row's columns that are fields of cls (a store row may carry more, like `runs` or `seq`)."""
    names = _field_names(cls)
    # A sqlite3.Row finds a value by name by comparing it with each column name in turn (a claimed job's decoding
    # spent most of its time there); it iterates its values, so pair them with its keys instead.
    pairs = row.items() if isinstance(row, Mapping) else zip(row.keys(), row, strict=True)
    return {k: v for k, v in pairs if k in names}


def _field_count(cls: type) -> int:
    return len(_field_names(cls))


@functools.cache
def _field_names(cls: type) -> frozenset[str]:
    # Once per class: dataclasses.fields() walks the class each call, a third of a claimed job's decoding.
    return frozenset(f.name for f in dataclasses.fields(cls))


#: Job columns that hold numbers, and what stands in for a value that is not one: SQLite keeps text in a number
#: column (a row written by something other than queuectl). Such a job is damaged (listed, shown, failed unrun).
_JOB_NUMBERS: dict[str, float | None] = {
    "attempts": 0, "runs": 0, "max_retries": None, "priority": 0, "run_at": 0.0, "timeout_s": None,
    "created_at": 0.0, "updated_at": 0.0, "started_at": None, "finished_at": None, "exit_code": None, "deps_left": 0}
_NUMBER_TYPES: frozenset[type] = frozenset({int, float, type(None)})
#: The same for an attempt's row (shown by `inspect`, counted by `stats`).
_ATTEMPT_NUMBERS: dict[str, float | None] = {"number": 0, "started_at": 0.0, "finished_at": None, "exit_code": None}


def _numbers_or_stand_ins(
    values: dict[str, Any], stand_ins: Mapping[str, float | None], kinds: frozenset[type] = _NUMBER_TYPES
) -> str | None:
    """Put its stand-in where a column of stand_ins holds something else than a number (of kinds: NULL too, by
    default); SQLite keeps text in a number column of a row written by hand. Returns what the first such column
    held, or None."""
    found = None
    for name, stand_in in stand_ins.items():
        value = values.get(name)
        if type(value) not in kinds:
            values[name] = stand_in
            found = found or f"its stored {name} is not a number ({one_line(str(value), 40)!r})"
    return found


@dataclasses.dataclass(frozen=True, kw_only=True)
class Job:
    """A job as stored."""

    #: Unique id.
    id: str
    #: Shell command text.
    command: str
    #: Lifecycle state.
    state: JobState
    #: Counted attempts so far (interrupted attempts are not counted).
    attempts: int
    #: Attempts started, interrupted ones included: the number of the latest attempt.
    runs: int = 0
    #: Retries allowed after the first attempt; None = configured default.
    max_retries: int | None
    #: Higher runs first.
    priority: int
    #: When the job is (next) due, Unix s.
    run_at: float
    #: Per-attempt timeout in seconds; None = configured default.
    timeout_s: float | None
    #: Working directory of the command.
    cwd: str
    #: Enqueue order, assigned by the store; breaks ties between equal priority and due time.
    seq: int
    created_at: float
    updated_at: float
    #: Start of the latest attempt.
    started_at: float | None = None
    #: End of the job (completed or dead).
    finished_at: float | None = None
    #: Exit code of the latest attempt (negative: killed by that signal).
    exit_code: int | None = None
    #: Error text of the latest failed attempt.
    last_error: str | None = None
    #: Engine holding the job while processing.
    engine_id: str | None = None
    #: Named queue ("default" unless given); a queue can be paused or limited in concurrency.
    queue: str = "default"
    #: While a job with this key is active (pending, waiting, failed, processing), no other can be enqueued with it.
    unique_key: str | None = None
    #: Extra environment variables for the command.
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    tags: tuple[str, ...] = ()
    #: Ids of the jobs this one runs after (all must complete first).
    after: tuple[str, ...] = ()
    #: Dependencies not completed yet; the job waits while this is above 0.
    deps_left: int = 0
    #: The dependency whose dead or cancelled end cancelled this job (retrying it brings this job back).
    blocked_by: str | None = None
    #: Name of the cron entry that enqueued it.
    cron: str | None = None
    #: `queuectl cancel` asked the engine running it to stop it.
    cancel_requested: bool = False
    #: Not stored: why a stored column could not be read (a row written by something other than queuectl). The
    #: row is still listed and shown; the engine fails the job instead of running it with what could be read.
    damaged: str | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Self:
        values = _own_fields(cls, row)
        values["state"] = JobState(values["state"])
        damaged = None
        for name in ("env", "tags", "after"):  # JSON text on SQLite, already decoded on PostgreSQL; NULL: none
            raw = values.get(name)
            try:
                if isinstance(raw, str):
                    raw = json.loads(raw)
                values[name] = dict(raw or {}) if name == "env" else tuple(raw or ())
                if name == "env" and not all(isinstance(v, str) for v in values[name].values()):
                    raise TypeError("a value is not a string")
            except (ValueError, TypeError) as exc:  # one bad row must not stop every listing and every claim
                values[name] = {} if name == "env" else ()
                damaged = f"its stored {name} cannot be read ({exc})"
        damaged = damaged or _numbers_or_stand_ins(values, _JOB_NUMBERS)
        values["damaged"] = damaged
        if "cancel_requested" in values:
            values["cancel_requested"] = bool(values["cancel_requested"])
        if len(values) < _field_count(cls):
            return cls(**values)  # a partial row: the defaults fill in, and a missing required column fails here
        # A whole row, as every claim returns: what cls(**values) does for a frozen dataclass, in one step instead
        # of a keyword call and an object.__setattr__ per field. It runs in the store's thread, holding the GIL
        # the event loop needs, once for every job run.
        job = object.__new__(cls)
        job.__dict__.update(values)
        return job


@dataclasses.dataclass(frozen=True, kw_only=True)
class Attempt:
    """One run of a job's command."""

    job_id: str
    #: 1-based run number; interrupted runs get a number too.
    number: int
    status: AttemptStatus
    engine_id: str | None
    started_at: float
    finished_at: float | None = None
    exit_code: int | None = None
    timed_out: bool = False
    error: str | None = None
    #: Last bytes of the combined stdout/stderr, decoded leniently.
    output_tail: str | None = None
    #: Path of the full log file of this attempt.
    log_path: str | None = None

    @property
    def duration_s(self) -> float | None:
        if self.finished_at is None:
            return None
        return max(0.0, self.finished_at - self.started_at)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Self:
        values = _own_fields(cls, row)
        values["status"] = AttemptStatus(values["status"])
        values["timed_out"] = bool(values.get("timed_out"))
        _numbers_or_stand_ins(values, _ATTEMPT_NUMBERS)  # shown as unknown ("-") rather than failing the reader
        return cls(**values)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Claim:
    """A job an engine has just claimed, with the number of the attempt it starts."""

    job: Job
    attempt: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class Outcome:
    """What running one attempt produced; knows nothing of the store."""

    exit_code: int | None
    timed_out: bool = False
    #: Why it failed, for humans: "exit code 3", "timed out after 5s", "killed by SIGKILL".
    error: str | None = None
    output_tail: str = ""
    #: The attempt's full log file, if one was written.
    log_path: str | None = None
    started_at: float
    finished_at: float

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


@dataclasses.dataclass(frozen=True, kw_only=True)
class Finished:
    """An attempt that ended, to record: the state its job moves to (completed; failed, due again at retry_at;
    dead; cancelled) as the engine decided it from the outcome and the retry policy."""

    claim: Claim
    outcome: Outcome
    state: JobState
    retry_at: float | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class EngineInfo:
    """A running engine as registered in the store."""

    id: str
    host: str
    pid: int
    workers: int
    started_at: float
    heartbeat_at: float
    stop_requested: bool = False

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Self:
        values = _own_fields(cls, row)
        values["stop_requested"] = bool(values.get("stop_requested"))
        # A hand-edited row: an engine that cannot be alive (pid 0, which kill() must never be given, nor a fraction),
        # started and last heard of at the epoch, so that it is judged gone instead of failing every reader.
        _numbers_or_stand_ins(values, {"pid": 0, "workers": 0}, frozenset({int}))
        _numbers_or_stand_ins(values, {"started_at": 0.0, "heartbeat_at": 0.0}, frozenset({int, float}))
        return cls(**values)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Counts:
    """Jobs per state plus the age of the oldest due pending job."""

    by_state: dict[JobState, int]
    oldest_pending_age_s: float | None

    @property
    def total(self) -> int:
        return sum(self.by_state.values())


@dataclasses.dataclass(frozen=True, kw_only=True)
class QueueInfo:
    """A named queue: its own limit on jobs running at once, and whether new starts are paused."""

    name: str
    #: At most this many of its jobs run at once, over all engines; 0 = no limit of its own.
    concurrency: int = 0
    paused: bool = False
    #: Jobs pending or failed (due now or later); None where it was not counted (see Store.queues).
    runnable: int | None = None
    running: int = 0

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Self:
        values = _own_fields(cls, row)
        values["paused"] = bool(values.get("paused"))
        return cls(**values)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CronEntry:
    """A recurring job: the cron expression and the job it enqueues at each due time."""

    name: str
    #: The cron expression as given (5 fields, or 6 with seconds first).
    schedule: str
    command: str
    cwd: str
    queue: str = "default"
    priority: int = 0
    max_retries: int | None = None
    timeout_s: float | None = None
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    paused: bool = False
    #: When due times were missed (no engine ran), run one of them instead of skipping them all.
    catch_up: bool = False
    #: The next due time, Unix s.
    next_run_at: float
    last_run_at: float | None = None
    last_job_id: str | None = None
    created_at: float

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Self:
        values = _own_fields(cls, row)
        raw = values.get("env")
        values["env"] = dict(json.loads(raw) if isinstance(raw, str) else (raw or {}))
        values["paused"] = bool(values.get("paused"))
        values["catch_up"] = bool(values.get("catch_up"))
        return cls(**values)


class CronTick(NamedTuple):
    """What one tick of the cron entries did."""

    #: Ids of the jobs enqueued.
    enqueued: list[str]
    #: The soonest next due time of an active entry.
    next_at: float | None
    #: Entries that could not be read (a schedule from a newer queuectl, a hand-edited row), by name, with why:
    #: each is put off cron.UNREADABLE_RETRY_S and the others run.
    unreadable: dict[str, str]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Webhook:
    """An HTTP endpoint that gets a signed JSON POST for each of its events."""

    id: int
    url: str
    #: Event names, e.g. ("dead", "failed").
    events: tuple[str, ...]
    secret: str | None = None
    created_at: float

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Self:
        values = _own_fields(cls, row)
        raw = values["events"]
        values["events"] = tuple(raw.split(",") if isinstance(raw, str) else raw)
        return cls(**values)
