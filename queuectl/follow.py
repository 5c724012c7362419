"""`queuectl logs`: print an attempt's log file, or follow it while the attempt runs."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import BinaryIO

from queuectl import paths
from queuectl.api import Queue
from queuectl.logsink import TAIL_BYTES
from queuectl.models import TERMINAL_STATES, JobState

POLL_S = 0.2
CHUNK = 1 << 16


def _copy_from(path: Path, offset: int, out: BinaryIO) -> int:
    """Write what the file holds past offset; returns the new offset. A log cut shorter restarts at 0."""
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            if f.tell() < offset:
                offset = 0
            f.seek(offset)
            while chunk := f.read(CHUNK):
                out.write(chunk)
                offset += len(chunk)
    except FileNotFoundError:
        return offset
    out.flush()
    return offset


async def print_log(q: Queue, job_id: str, attempt: int | None, follow: bool) -> None:
    out = sys.stdout.buffer
    job = await q.get(job_id)
    while follow and job.runs == 0 and job.state not in TERMINAL_STATES:
        await asyncio.sleep(POLL_S)  # -f on a job that has not started yet waits for it
        job = await q.get(job_id)
    _, number, path = await q.log_path(job_id, attempt)
    if not follow:
        if path.exists():
            _copy_from(path, 0, out)
        else:  # the file is made at the first byte: none means nothing was printed, unless it was deleted since
            await _print_kept_tail(q, job_id, number, out)
        return
    offset = 0
    while True:
        offset = _copy_from(path, offset, out)
        job = await q.get(job_id)
        if not (job.state == JobState.PROCESSING and job.runs == number):
            _copy_from(paths.attempt_log_path(q.home, job_id, number), offset, out)
            return
        await asyncio.sleep(POLL_S)


async def _print_kept_tail(q: Queue, job_id: str, number: int, out: BinaryIO) -> None:
    """A log file that is gone although its attempt printed something: say so, and give what the store kept."""
    kept = next((a.output_tail for a in (await q.inspect(job_id)).attempts if a.number == number), None)
    if kept:
        print(f"queuectl: the log file of attempt {number} of job {job_id!r} was deleted; "
              f"the last {TAIL_BYTES // 1024} KiB of its output, kept with the attempt:", file=sys.stderr)
        out.write(kept.encode())
        out.flush()


async def follow_job(q: Queue, job_id: str) -> dict[str, JobState]:
    """`enqueue --follow`: print each attempt's output as it comes until the job ends; returns {id: final state}."""
    out = sys.stdout.buffer
    number, offset = 1, 0
    while True:
        job = await q.get(job_id)
        if job.runs >= number:
            path = paths.attempt_log_path(q.home, job_id, number)
            offset = _copy_from(path, offset, out)
            if job.runs > number or job.state != JobState.PROCESSING:
                _copy_from(path, offset, out)  # what the attempt wrote before it ended
                number, offset = number + 1, 0
                continue
        elif job.state in TERMINAL_STATES:
            return {job_id: job.state}
        await asyncio.sleep(POLL_S / 4)
