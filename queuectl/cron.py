"""Recurring jobs: when a cron entry is due and which job each due time makes. Pure: the stores do the atomic part.

A due time that is noticed more than MISSED_AFTER_S late was missed (no engine ran then): missed runs are skipped,
or with catch_up one job runs for all of them. A due time noticed on time makes one job, even if the entry was due
several times since (an every-second entry during a stall runs once, not in a burst).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, NamedTuple

from queuectl import cronexpr, jobspec
from queuectl.errors import ValidationError
from queuectl.jobspec import NewJob
from queuectl.models import CronEntry

#: A due time seen later than this was missed.
MISSED_AFTER_S = 60.0
#: An entry that cannot be read is tried again this much later (a newer engine may read it meanwhile).
UNREADABLE_RETRY_S = 60.0


class Plan(NamedTuple):
    #: The job to enqueue now, if any.
    job: NewJob | None
    next_run_at: float


def next_run(schedule: str, after: float) -> float:
    return cronexpr.next_after(cronexpr.parse(schedule), after)


def job_id(name: str, due: float) -> str:
    """Deterministic, so that two engines ticking the same due time would make the same id."""
    return f"{name}@{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(due))}"


def plan(entry: CronEntry, now: float) -> Plan:
    due = entry.next_run_at
    nxt = next_run(entry.schedule, now)
    if now - due > MISSED_AFTER_S and not entry.catch_up:
        return Plan(None, nxt)
    job = NewJob(id=job_id(entry.name, due), command=entry.command, run_at=now, cwd=entry.cwd, queue=entry.queue,
                 priority=entry.priority, max_retries=entry.max_retries, timeout_s=entry.timeout_s,
                 env=tuple(entry.env.items()), cron=entry.name)
    return Plan(job, nxt)


def plan_row(row: Mapping[str, Any], now: float) -> tuple[Plan, str | None]:
    """plan() for a stored row. A row that cannot be read or planned (a schedule written by a newer queuectl,
    a hand-edited row) makes no job and is put off UNREADABLE_RETRY_S; the second value says why."""
    try:
        return plan(CronEntry.from_row(row), now), None
    except Exception as exc:  # anything the row's contents can raise: one entry must not stop the others
        return Plan(None, now + UNREADABLE_RETRY_S), str(exc) or type(exc).__name__


def make_entry(
    name: str, schedule: str, command: str, *, cwd: str, now: float, queue: str = "default", priority: int = 0,
    max_retries: int | None = None, timeout_s: float | None = None, env: tuple[tuple[str, str], ...] = (),
    catch_up: bool = False,
) -> CronEntry:
    """A validated entry, first due at the schedule's next time after now."""
    jobspec.check_name(name, "cron name")
    expr = cronexpr.parse(schedule)
    jobspec.check_name(queue, "queue name")
    if not 0 <= priority <= jobspec.MAX_PRIORITY:
        raise ValidationError(f"--priority must be from 0 to {jobspec.MAX_PRIORITY}; got {priority}")
    if max_retries is not None and not 0 <= max_retries <= jobspec.MAX_RETRIES:
        raise ValidationError(f"--max-retries must be from 0 to {jobspec.MAX_RETRIES}; got {max_retries}")
    if timeout_s is not None and not timeout_s > 0:
        raise ValidationError(f"--timeout must be > 0 seconds; got {timeout_s:g}")
    return CronEntry(name=name, schedule=expr.text, command=jobspec.check_command(command),
                     cwd=jobspec.check_text(cwd, "cwd (the directory the command runs in)"), queue=queue,
                     priority=priority, max_retries=max_retries, timeout_s=timeout_s, env=dict(env),
                     catch_up=catch_up, next_run_at=cronexpr.next_after(expr, now), created_at=now)
