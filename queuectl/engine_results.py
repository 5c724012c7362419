"""What an ended attempt means for its job (decide) and how a recorded end is reported: the summary, the event
log, hooks and webhooks, and the heap for a scheduled retry. No I/O of its own beyond the event log."""

from __future__ import annotations

from queuectl import retry
from queuectl.config import Settings
from queuectl.engine_options import Summary
from queuectl.events import EventLog
from queuectl.models import Claim, Finished, JobState, Outcome
from queuectl.notify import Notifier
from queuectl.scheduler import DueHeap
from queuectl.timefmt import human_duration


def decide(claim: Claim, outcome: Outcome, settings: Settings) -> Finished:
    """Where the job goes after this attempt, by the retry policy in force now."""
    if outcome.succeeded:
        return Finished(claim=claim, outcome=outcome, state=JobState.COMPLETED)
    decision = retry.decide(claim.job.attempts + 1, claim.job.max_retries, settings)
    if decision.delay_s is None:
        return Finished(claim=claim, outcome=outcome, state=JobState.DEAD)
    retry_at = outcome.finished_at + decision.delay_s
    return Finished(claim=claim, outcome=outcome, state=JobState.FAILED, retry_at=retry_at)


def report(f: Finished, summary: Summary, log: EventLog, notifier: Notifier, heap: DueHeap) -> None:
    """A round recorded this attempt's end."""
    job, attempt, outcome = f.claim.job, f.claim.attempt, f.outcome
    if f.state == JobState.COMPLETED:
        summary.completed += 1
        took = human_duration(outcome.finished_at - outcome.started_at)
        log.emit("completed", f"{job.id} completed in {took}", job=job.id, attempt=attempt,
                 duration_s=round(outcome.finished_at - outcome.started_at, 6))
        notifier.job_ended("completed", job, attempt, outcome, "completed")
        return
    if f.state == JobState.CANCELLED:
        summary.cancelled += 1
        log.emit("cancelled", f"{job.id} cancelled: its process group was terminated", job=job.id, attempt=attempt)
        notifier.job_ended("cancelled", job, attempt, outcome, "cancelled")
        return
    summary.timed_out += outcome.timed_out
    event = "timed_out" if outcome.timed_out else "failed"
    if f.state == JobState.DEAD:
        summary.dead += 1
        log.emit("dead", f"{job.id} {outcome.error}; retries spent, moved to the dead-letter queue",
                 job=job.id, attempt=attempt, error=outcome.error, outcome=event)
        notifier.job_ended("dead", job, attempt, outcome, "dead")
        return
    assert f.retry_at is not None
    delay_s = f.retry_at - outcome.finished_at
    summary.retried += 1
    heap.push(f.retry_at, job.id)  # the dispatcher, which reports, sleeps until then at most
    log.emit(event, f"{job.id} {outcome.error}; retrying in {human_duration(delay_s)}", job=job.id,
             attempt=attempt, error=outcome.error, retry_in_s=round(delay_s, 3))
    notifier.job_ended(event, job, attempt, outcome, "failed")
