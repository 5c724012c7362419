"""The engine's log: one line per job event, readable or JSON (--log-format json).

Written to a real file (a terminal, a pipe, a socket) by a thread of its own, never by the event loop: a write to a
terminal paused with Ctrl-S, or to a pipe nobody reads (`queuectl run 2>&1 | less`), blocks until the reader goes
on. In the event loop that froze the whole engine: no job started or was recorded, no heartbeat was sent, and not
even SIGINT was handled. Lines that pile up while the output is blocked are kept up to MAX_PENDING_LINES, then
counted and dropped, and a line says how many when the output moves again.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import json
import math
import os
import select
import sys
import threading
import time
from typing import Any, TextIO

from queuectl.timefmt import iso

#: Lines kept while the log's output is blocked (~1-2 MB); later ones are counted and dropped.
MAX_PENDING_LINES = 10_000
#: The writer lets a burst of lines gather for this long, then writes them at once. Each wake of the thread takes
#: the GIL from the event loop: waking every 2 ms cost the engine ~40 us of CPU per `true` job (4 workers, median
#: of 5 interleaved runs), every 20 ms nothing measurable. A line reaches the output at most 20 ms late.
_BATCH_S = 0.02
#: At exit, how long the last lines may take to get out.
_CLOSE_WAIT_S = 2.0


class EventLog:
    def __init__(self, fmt: str = "text", stream: TextIO | None = None, *,
                 max_pending_lines: int = MAX_PENDING_LINES) -> None:
        self.fmt = fmt
        # sys.stderr is None when the process started with it closed (the CLI gives it /dev/null first).
        self.stream = stream if stream is not None else (sys.stderr or open(os.devnull, "w"))  # noqa: SIM115
        self._second = -1
        self._prefix = ""
        fd = _fileno(self.stream)
        self._writer = _Writer(fd, max_pending_lines) if fd is not None else None

    def _stamp(self, now: float) -> str:
        """iso(now), its date and time formatted once a second: a busy engine writes thousands of lines a second."""
        frac, whole = math.modf(now)
        second, us = int(whole), round(frac * 1e6)  # as datetime.fromtimestamp rounds
        if us >= 1_000_000:
            second, us = second + 1, us - 1_000_000
        if second != self._second:
            self._second, self._prefix = second, (iso(second) or "")[:-5]  # without ".000Z"
        return f"{self._prefix}.{us // 1000:03d}Z"

    def emit(self, event: str, message: str, **fields: Any) -> None:
        now = time.time()
        if self.fmt == "json":
            line = json.dumps({"ts": self._stamp(now), "event": event, **fields}, default=str)
        else:
            line = f"{self._stamp(now)} {message}"
        if self._writer is not None:
            self._writer.put(line + "\n")
            return
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # a closed or broken log pipe must never stop the engine
            pass

    def close(self, wait_s: float = _CLOSE_WAIT_S) -> None:
        """Write what is pending, waiting at most wait_s for a blocked output (then the rest is lost)."""
        if self._writer is not None:
            self._writer.close(wait_s)


def _fileno(stream: TextIO) -> int | None:
    try:
        fd = stream.fileno()
        stream.flush()  # what was written through the stream comes first
    except (OSError, ValueError):  # io.UnsupportedOperation is both
        return None
    return fd


class _Writer:
    """A thread that writes the lines put to it, in order, in batches, with os.write: through the stream object,
    a thread blocked in a write holds the stream's lock, and the interpreter's own flush of it at exit would wait
    for that lock for ever. Only put() (one thread) appends and counts drops; only the thread pops and reports
    them, so neither needs a lock beyond the deque's own."""

    def __init__(self, fd: int, max_pending: int = MAX_PENDING_LINES) -> None:
        self._fd = fd
        self._max_pending = max_pending
        self._lines: collections.deque[str] = collections.deque()
        self._dropped = 0  # by put()
        self._reported = 0  # by the thread
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="queuectl-log", daemon=True)
        self._thread.start()
        atexit.register(self.close, _CLOSE_WAIT_S)

    def put(self, line: str) -> None:
        if len(self._lines) < self._max_pending:
            self._lines.append(line)
        else:
            self._dropped += 1
        if not self._wake.is_set():  # set() takes a lock and may wake the thread: only when it sleeps
            self._wake.set()

    def close(self, wait_s: float) -> None:
        if self._closed.is_set():  # closed already (the atexit call after the engine's own)
            return
        self._closed.set()
        self._wake.set()
        self._thread.join(wait_s)

    def _run(self) -> None:
        while True:
            self._wake.wait()
            # A pause for a burst to gather, cut short by close(). Not time.sleep(): under libfaketime (the clock
            # tests) it fails with EINVAL, and the thread died with it, leaving the engine without a log.
            self._closed.wait(_BATCH_S)
            self._wake.clear()
            self._write_pending()
            if self._closed.is_set() and not self._lines:
                return

    def _write_pending(self) -> None:
        lines = []
        with contextlib.suppress(IndexError):
            while True:
                lines.append(self._lines.popleft())
        dropped = self._dropped - self._reported
        if dropped:
            self._reported += dropped
            lines.append(f"[queuectl: {dropped} log line(s) dropped while the log's output was blocked]\n")
        if not lines:
            return
        data = memoryview("".join(lines).encode("utf-8", "backslashreplace"))  # as sys.stderr does
        while data:
            try:
                data = data[os.write(self._fd, data):]
            except BlockingIOError:  # an output its owner made non-blocking: wait until it takes more
                select.select([], [self._fd], [], 1.0)
            except OSError:  # a closed or broken log pipe must never stop the engine
                return
