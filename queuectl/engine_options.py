"""What an engine is started with and what it reports when it stops, and the child watcher it installs."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from queuectl.timefmt import human_duration


@dataclasses.dataclass(frozen=True, kw_only=True)
class EngineOptions:
    home: Path
    workers: int = 1
    #: Bound on a graceful stop: after this, running jobs are terminated and given back.
    grace_s: float | None = None
    #: Exit once nothing runs, nothing is due and no retry is pending (for scripts and tests).
    until_idle: bool = False
    heartbeat_interval_s: float = 5.0
    #: A heartbeat older than this marks an engine (on any host) as gone.
    stale_after_s: float = 30.0
    recover_interval_s: float = 10.0
    #: How often finished jobs past their retention (config retain-*) are deleted.
    retention_interval_s: float = 60.0
    #: Fallback check for changes made by other processes (the wake-up datagram is the fast path).
    change_poll_s: float = 1.0
    #: Longest sleep of an idle dispatcher: a bound on the effect of a wall-clock jump.
    max_sleep_s: float = 5.0
    window: int = 512
    #: Under a storm of changes, the scheduler window is re-read at most this often.
    refill_min_interval_s: float = 0.1
    #: Consecutive store failures (each retried with backoff) before the engine gives up. A full disk or a lost
    #: database connection is waited out instead.
    max_store_failures: int = 6
    #: Serve only these queues (None: every queue).
    queues: tuple[str, ...] | None = None
    #: Cancel requests are looked up at most this often under a storm of changes.
    cancel_check_min_interval_s: float = 0.02
    #: While workers have jobs claimed ahead, ended attempts wait at most this long to be recorded together.
    round_defer_s: float = 0.005
    #: After a command could not start for want of files, processes or memory, no job starts for this long,
    #: doubling with each such failure in a row up to shortage_pause_max_s.
    shortage_pause_s: float = 1.0
    shortage_pause_max_s: float = 30.0


def claim_ahead_jobs(workers: int) -> int:
    """How many jobs an engine claims ahead of its workers: enough to cover the jobs its workers start while one
    store round is on its way (measured with 4 workers: with 4 ahead, 40% of job ends found no job ready, with 8,
    9%), at most two per worker. An engine therefore holds at most 3 x workers jobs in the store."""
    return min(2 * workers, max(workers, 8))


@dataclasses.dataclass
class Summary:
    completed: int = 0
    retried: int = 0
    dead: int = 0
    timed_out: int = 0
    released: int = 0
    recovered: int = 0
    cancelled: int = 0
    started_at: float = dataclasses.field(default_factory=time.time)

    def line(self) -> str:
        return (
            f"engine stopped after {human_duration(time.time() - self.started_at)}: {self.completed} completed, "
            f"{self.retried} failed and retrying, {self.dead} dead, {self.timed_out} timed out, "
            f"{self.cancelled} cancelled, {self.released} given back, {self.recovered} recovered"
        )


def install_child_watcher() -> Callable[[], None]:
    """Python 3.11 waits for each child with a thread of its own; a pidfd watcher needs none and spawns
    25-40% faster here. 3.12+ already uses pidfds. Returns the undo, run when the engine exits."""
    if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
        return lambda: None
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:
        return lambda: None
    watcher = _SameThreadPidfdWatcher()
    watcher.attach_loop(asyncio.get_running_loop())
    asyncio.set_child_watcher(watcher)
    return lambda: asyncio.set_child_watcher(None)  # type: ignore[arg-type]  # None: the next loop gets the default


class _SameThreadPidfdWatcher(asyncio.PidfdChildWatcher):
    """A pidfd watcher reports exits from the event loop's own thread, yet asyncio's callback for it is written for
    watchers with threads: call_soon_threadsafe, a byte through the loop's self-pipe (a write, a read) and two more
    loop passes, once per job. A subprocess transport's own exit handler, scheduled with call_soon, does the same
    work; any other callback goes the usual way. A child for which no pidfd can be opened is polled for instead.
    (Python 3.11 only: 3.12 and later use no child watcher.)"""

    def __init__(self) -> None:
        super().__init__()
        #: Children watched by polling (see add_child_handler), with their next poll.
        self._polled: dict[int, asyncio.Handle] = {}

    def add_child_handler(self, pid: int, callback: Callable[..., object], *args: object) -> None:
        loop = getattr(callback, "__self__", None)
        if getattr(callback, "__name__", "") == "_child_watcher_callback" and loop is self._loop:  # type: ignore[attr-defined]
            callback, args = _exited, (loop, args[0])  # args: (the transport,)
        try:
            super().add_child_handler(pid, callback, *args)
        except OSError:
            # No pidfd (out of open files), yet the child runs: asyncio would raise without closing the transport
            # and leave the command unwatched while its attempt is recorded as not started. Poll for its exit.
            self._polled[pid] = self._loop.call_soon(self._poll, pid, callback, args, _FIRST_POLL_S)  # type: ignore[attr-defined]

    def _poll(self, pid: int, callback: Callable[..., object], args: tuple[object, ...], delay_s: float) -> None:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere: asyncio's pidfd watcher reports 255 then too
            done, status = pid, 255 << 8
        if done == 0:
            self._polled[pid] = self._loop.call_later(  # type: ignore[attr-defined]
                delay_s, self._poll, pid, callback, args, min(2 * delay_s, _LAST_POLL_S))
            return
        del self._polled[pid]
        callback(pid, os.waitstatus_to_exitcode(status), *args)

    def remove_child_handler(self, pid: int) -> bool:
        handle = self._polled.pop(pid, None)
        if handle is not None:
            handle.cancel()
            return True
        return super().remove_child_handler(pid)


#: Polling a child without a pidfd: from 1 ms, doubling to 50 ms (a rare fallback; exits are seen within 50 ms).
_FIRST_POLL_S, _LAST_POLL_S = 0.001, 0.05


def _exited(pid: int, returncode: int, loop: asyncio.AbstractEventLoop, transport: object) -> None:
    loop.call_soon(transport._process_exited, returncode)  # type: ignore[attr-defined]
