"""Decisions both stores make the same way, on states each has read inside its own transaction. No I/O, and no
heavy imports: the enqueue fast path reaches this through sqlite_tx."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from queuectl.errors import ConflictError, NotFoundError

#: The ends a job never leaves by itself (models.TERMINAL_STATES, as the strings the stores hold).
ENDED = frozenset({"completed", "dead", "cancelled"})


def deps_left(job_id: str, after: Sequence[str], states: Mapping[str, str]) -> int:
    """How many of the jobs `job_id` runs after have not completed. Refuses one that does not exist, and one that
    ended dead or cancelled (it would never complete)."""
    left = 0
    for dep in after:
        state = states.get(dep)
        if state is None:
            raise NotFoundError(f"job {job_id!r} cannot run after {dep!r}: there is no such job")
        if state in ("dead", "cancelled"):
            raise ConflictError(f"job {job_id!r} cannot run after {dep!r}: it is {state} and will not complete "
                                f"(retry it first: queuectl dlq retry {dep})")
        left += state != "completed"
    return left


def split_cancellable(ids: Sequence[str], states: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """(jobs to cancel at once, running jobs whose engine must stop them). Refuses an unknown or finished job."""
    for job_id in ids:
        if job_id not in states:
            raise NotFoundError(f"no job {job_id!r}")
        if states[job_id] in ENDED:
            raise ConflictError(f"job {job_id!r} is {states[job_id]} and cannot be cancelled")
    return [i for i in ids if states[i] != "processing"], [i for i in ids if states[i] == "processing"]
