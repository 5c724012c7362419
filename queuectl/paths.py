"""Where queuectl keeps its data: one directory per user (or per --home)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path

from queuectl.errors import HomeError, not_utf8

DB_NAME = "queue.db"
LOGS_DIR = "logs"
WAKE_DIR = "wake"


def default_home() -> Path:
    """QUEUECTL_HOME, else $XDG_DATA_HOME/queuectl, else ~/.local/share/queuectl.

    platformdirs gives the same answer on Linux; resolving it here keeps CLI start-up ~25 ms faster.
    """
    if env := os.environ.get("QUEUECTL_HOME"):
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "queuectl"


def ensure_home(home: Path) -> Path:
    """Create the data directory (0700) and its subdirectories; one clear error if that is impossible."""
    try:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        for sub in (LOGS_DIR, WAKE_DIR):
            (home / sub).mkdir(mode=0o700, exist_ok=True)
    except OSError as exc:
        raise HomeError(f"cannot create data directory {home}: {exc.strerror or exc}") from None
    if not os.access(home, os.W_OK | os.X_OK):
        raise HomeError(f"data directory {home} is not writable")
    return home


def check_text_path(home: Path) -> None:
    """An engine records its log files' paths in the database, as UTF-8 text like every text there: a data
    directory whose path holds bytes that are not UTF-8 would fail the first result it records."""
    try:
        str(home.absolute()).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise HomeError(f"cannot run an engine in data directory {os.fsencode(home)!r}: its path is not valid "
                        f"UTF-8 text ({not_utf8(exc)}); choose another --home") from None


def attempt_log_path(home: Path, job_id: str, attempt: int) -> Path:
    """One log file per attempt, all in one directory (a directory per job cost a mkdir per job). Job ids are
    file-name safe and never contain '#' (see jobspec), so the job of a log file is the part before the '#'."""
    return Path(attempt_log_file(str(home / LOGS_DIR), job_id, attempt))


def attempt_log_file(logs_dir: str, job_id: str, attempt: int) -> str:
    """attempt_log_path as a string, for the engine's hot path (no pathlib objects per job)."""
    return f"{logs_dir}/{job_id}#{attempt}.log"


#: The finish hooks (config on-success, on-failure, on-dead): each writes its own log beside the attempt's.
HOOKS = ("on-success", "on-failure", "on-dead")


def hook_log_file(logs_dir: str, job_id: str, attempt: int, hook: str) -> str:
    """Beside the attempt's log: ID#N.HOOK.log."""
    return f"{logs_dir}/{job_id}#{attempt}.{hook}.log"


def hook_log_path(home: Path, job_id: str, attempt: int, hook: str) -> Path:
    return Path(hook_log_file(str(home / LOGS_DIR), job_id, attempt, hook))


#: Past this many possible log names, remove_logs scans the directory instead of trying each name.
_SCAN_ABOVE_NAMES = 50_000


def remove_logs(home: Path, attempts_by_job: Mapping[str, int]) -> None:
    """Delete every log of these jobs (job id -> its last attempt number): each attempt's and its hooks'.

    By name: the directory holds every job's logs, and at 300,000 files one scan took 0.27 s, where a retention
    batch of 500 jobs takes 24 ms by name. Trying a name that does not exist costs ~4.4 us, a scanned entry
    ~0.7 us, so a mass delete (`purge` of everything) scans once instead."""
    logs = str(home / LOGS_DIR)
    if sum(attempts_by_job.values()) * (1 + len(HOOKS)) > _SCAN_ABOVE_NAMES:
        try:
            entries = list(os.scandir(logs))
        except OSError:
            return
        for entry in entries:
            if entry.name.partition("#")[0] in attempts_by_job:  # job ids never contain '#' (see jobspec)
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
        return
    for job_id, last in attempts_by_job.items():
        for attempt in range(1, last + 1):
            for path in (attempt_log_file(logs, job_id, attempt),
                         *(hook_log_file(logs, job_id, attempt, hook) for hook in HOOKS)):
                with contextlib.suppress(OSError):  # most attempts print nothing and run no hook: no such file
                    os.unlink(path)


def loose_permissions(home: Path) -> list[str]:
    """Warnings for a data directory or files that others can read or write (anyone who can write the database
    can run commands as the engine's user)."""
    warnings = []
    for path, wanted in ((home, 0o700), (home / DB_NAME, 0o600), (home / LOGS_DIR, 0o700)):
        try:
            mode = path.stat().st_mode & 0o777
        except OSError:
            continue
        if mode & 0o077:
            warnings.append(f"{path} has mode {mode:04o}: others can reach it; run `chmod {wanted:o} {path}`")
    return warnings
