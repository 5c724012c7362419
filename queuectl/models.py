"""The shared model: jobs, attempts, engines. No I/O.

Every time in this module is a Unix timestamp in seconds (float, UTC); JSON output shows ISO-8601 UTC.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from typing import Any, Self


class JobState(enum.StrEnum):
    PENDING = "pending"  # waiting for its run_at
    PROCESSING = "processing"  # claimed by an engine, command running
    COMPLETED = "completed"  # exit code 0
    FAILED = "failed"  # last attempt failed, a retry is scheduled at run_at
    DEAD = "dead"  # retries spent: the dead-letter queue


#: States a job never leaves by itself.
TERMINAL_STATES = frozenset({JobState.COMPLETED, JobState.DEAD})


class AttemptStatus(enum.StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # non-zero exit, signal, could not start
    TIMED_OUT = "timed_out"
    INTERRUPTED = "interrupted"  # engine crashed or was stopped fast; does not count against retries


def _own_fields(cls: type, row: Mapping[str, Any]) -> dict[str, Any]:
    """The row's columns that are fields of cls (a store row may carry more, like `runs` or `seq`)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: row[k] for k in row.keys() if k in names}  # noqa: SIM118 - sqlite3.Row iterates values, not keys


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

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Self:
        values = _own_fields(cls, row)
        values["state"] = JobState(values["state"])
        return cls(**values)



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
        return cls(**values)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Counts:
    """Jobs per state plus the age of the oldest due pending job."""

    by_state: dict[JobState, int]
    oldest_pending_age_s: float | None

    @property
    def total(self) -> int:
        return sum(self.by_state.values())
