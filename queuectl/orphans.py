"""Process groups left running by an engine that died (kill -9, OOM): found and killed before their jobs run again.

Each job leads its own session, so killing the engine does not kill its jobs. While a job runs, its engine keeps
a file run/<engine id>/<job id> holding the job's process-group id. An engine that finds the directory of a dead
engine of this host kills each group that still exists (checking that a member carries that job's
QUEUECTL_JOB_ID, so a recycled pid is never hit), then removes the directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from pathlib import Path

from queuectl.procs import pid_alive

RUN_DIR = "run"


def engine_dir(home: Path, engine_id: str) -> Path:
    return home / RUN_DIR / engine_id


def track(home: Path, engine_id: str, job_id: str, pgid: int) -> None:
    path = engine_dir(home, engine_id)
    try:
        (path / job_id).write_text(str(pgid))
    except FileNotFoundError:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        (path / job_id).write_text(str(pgid))


def untrack(home: Path, engine_id: str, job_id: str) -> None:
    with contextlib.suppress(OSError):
        (engine_dir(home, engine_id) / job_id).unlink()


def forget_engine(home: Path, engine_id: str) -> None:
    shutil.rmtree(engine_dir(home, engine_id), ignore_errors=True)


def _members(pgid: int) -> list[int]:
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 2 and fields[2] == str(pgid).encode():
            pids.append(int(entry.name))
    return pids


def _runs_job(pid: int, job_id: str) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f"QUEUECTL_JOB_ID={job_id}".encode() in f.read().split(b"\0")
    except OSError:
        return False


def kill_leftovers(home: Path, engine_id: str) -> list[str]:
    """Kill the still-running groups of a dead engine's jobs; returns the job ids whose group was killed."""
    killed = []
    directory = engine_dir(home, engine_id)
    with contextlib.suppress(OSError):
        for entry in os.scandir(directory):
            try:
                pgid = int(Path(entry.path).read_text())
            except (OSError, ValueError):
                continue
            members = _members(pgid)
            if members and any(_runs_job(pid, entry.name) for pid in members):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, signal.SIGKILL)
                killed.append(entry.name)
    forget_engine(home, engine_id)
    return killed


def dead_engines(home: Path, host: str, own_id: str) -> list[str]:
    """Engine directories of this host whose engine process is gone (engine ids are host-pid-random)."""
    found = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(home / RUN_DIR):
            head, _, _random = entry.name.rpartition("-")
            entry_host, _, pid = head.rpartition("-")
            if entry.name != own_id and entry_host == host and pid.isdigit() and not pid_alive(int(pid)):
                found.append(entry.name)
    return found
