"""The enqueuing side of pickup_latency, run as its own process: `python -m benchmarks.pickup_helper HOME N GAP_S`.

Enqueues N jobs one at a time through queuectl.api.Queue, each once the engine has gone idle again, and prints a
JSON list of the times right after each enqueue's commit (taken when the store's enqueue returns, before the
wake-up datagram is sent). Each job writes its own start time (`date +%s.%N`) to HOME/stamps/ID.
"""

from __future__ import annotations

import asyncio
import json
import random
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from queuectl import jobspec
from queuectl.api import Queue


def stamp_path(home: Path, job_id: str) -> Path:
    return home / "stamps" / job_id


def job_command(home: Path, job_id: str) -> str:
    # exec: the shell becomes date, so the stamp is taken as early as a command can take it
    return f"exec date +%s.%N > {shlex.quote(str(stamp_path(home, job_id)))}"


def read_stamp(path: Path) -> float:
    """The time a job's `date +%s.%N` wrote."""
    return float(path.read_text().split()[0])


async def wait_written(path: Path, timeout_s: float = 10.0) -> None:
    """Until `date` has written its line (the shell creates the file before date runs)."""
    deadline = time.monotonic() + timeout_s
    while not (path.exists() and path.read_bytes().endswith(b"\n")):  # noqa: ASYNC240 - a tiny file
        if time.monotonic() > deadline:
            raise TimeoutError(f"job did not run within {timeout_s:g}s: {path}")
        await asyncio.sleep(0.005)


async def run(home: Path, n: int, gap_s: float) -> list[float]:
    (home / "stamps").mkdir(exist_ok=True)
    commits: list[float] = []
    async with Queue(home) as q:
        store = q.store
        enqueue = store.enqueue

        async def timed(jobs: Sequence[Any], **kwargs: Any) -> list[str]:
            ids = await enqueue(jobs, **kwargs)
            commits.append(time.time())
            return ids

        store.enqueue = timed  # type: ignore[method-assign]
        for i in range(n):
            job_id = f"p{i}"
            await asyncio.sleep(gap_s * random.uniform(0.75, 1.25))  # the engine idle, at a random phase
            await q.enqueue([jobspec.from_mapping({"id": job_id, "command": job_command(home, job_id)})])
            await wait_written(stamp_path(home, job_id))
    return commits


if __name__ == "__main__":
    home_arg, n_arg, gap_arg = sys.argv[1:4]
    print(json.dumps(asyncio.run(run(Path(home_arg), int(n_arg), float(gap_arg)))))
