"""An attempt's output: the command writes into a pipe, the event loop copies it to the attempt's log file.

Why a pipe and not the file itself as the command's stdout: the file is then created only when the first byte
arrives, so a command that prints nothing costs no file. Creating a file allocates an inode, 10-25 us on a healthy
ext4 disk but up to 1 ms of kernel CPU on one without a journal after many deletions (ext4 skips inodes freed in
the last minutes one by one), and a network round trip on NFS; that was most of the engine's cost per `true` job
on such a disk. A pipe also lets the cap on the log's size hold at every write, not at a periodic check, and keeps
the tail in memory (no re-read of the file at the end).

A process the command left behind (a daemon holding the pipe) does not hold the attempt up: the attempt ends when
the command's leader exits, and the sink goes on copying what the daemon writes until it closes the pipe or the
engine stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from pathlib import Path

#: Bytes of the end of the output kept with the attempt in the store.
TAIL_BYTES = 4096
#: Bytes per read at first (Linux's default pipe size), and once a read fills that, per read and the pipe's size
#: where the system allows it: a flood is copied in fewer, larger reads, while the common small output costs
#: neither a larger pipe nor a 1 MiB buffer per read.
_FIRST_CHUNK = 1 << 16
_CHUNK = 1 << 20
_SETPIPE_SZ: int | None = getattr(fcntl, "F_SETPIPE_SZ", None)  # Linux only
#: Reads once the leader exited, before leaving the rest to the event loop: the pipe holds at most one chunk, so
#: more only comes from a leftover process still writing, which must not hold the loop.
_DRAIN_READS = 4

#: Seconds a command runs before its pipe is watched and its output copied as it comes. Most commands end sooner,
#: and their output is read once, at the end, without registering the pipe with the event loop (two epoll calls
#: and their bookkeeping per job). Meanwhile the pipe holds 64 KiB: a command printing more waits this long at most.
WATCH_AFTER_S = 0.01

#: Sinks still copying from a pipe that a leftover process holds, closed when the engine stops.
_lingering: set[LogSink] = set()


def open_log(path: str | Path) -> int:
    flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC
    try:
        return os.open(path, flags, 0o600)
    except FileNotFoundError:  # the logs directory was removed under a running engine
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        return os.open(path, flags, 0o600)


class LogSink:
    """One attempt's output. `pipe()` gives the command's stdout, `attach()` starts copying, `finish()` after the
    leader exited reads what is left and says what to keep with the attempt."""

    def __init__(self, path: str | Path, *, max_bytes: int = 0) -> None:
        self.path = path
        self._max_bytes = max_bytes
        self._read_fd: int | None = None
        self._file_fd: int | None = None  # opened at the first byte
        self._loop: asyncio.AbstractEventLoop | None = None
        self._size = 0  # of the file
        self._total = 0  # bytes of output in all, for a capped log's marker
        self._tail_at = max_bytes // 2  # where a capped log's newest output starts: after the head and any marker
        self._tail = bytearray()
        self._error: str | None = None
        self._chunk = _FIRST_CHUNK
        self._watch_timer: asyncio.TimerHandle | None = None
        self._watching = False

    def pipe(self) -> int:
        """The write end, for the command; the caller closes it once the command has started."""
        read_fd, write_fd = os.pipe()  # both close-on-exec (PEP 446); the command gets its own copy as stdout
        # Only our end is non-blocking: the command's writes block as usual when the pipe is full. (A new pipe's
        # read end has no other status flags, so one F_SETFL does what os.set_blocking does with two calls.)
        fcntl.fcntl(read_fd, fcntl.F_SETFL, os.O_NONBLOCK)
        self._read_fd = read_fd
        return write_fd

    def attach(self) -> None:
        """The command has started: copy its output as it comes from WATCH_AFTER_S on (finish() reads the rest)."""
        assert self._read_fd is not None
        self._loop = asyncio.get_running_loop()
        self._watch_timer = self._loop.call_later(WATCH_AFTER_S, self._watch)

    def _watch(self) -> None:
        self._watch_timer = None
        if self._read_fd is not None and not self._watching:
            assert self._loop is not None
            self._loop.add_reader(self._read_fd, self._on_readable)
            self._watching = True

    def write(self, data: bytes) -> None:
        if len(data) >= TAIL_BYTES:
            self._tail = bytearray(data[-TAIL_BYTES:])
        else:
            self._tail += data
            if len(self._tail) > TAIL_BYTES:
                del self._tail[:-TAIL_BYTES]
        if self._error is not None:
            return
        try:
            if self._file_fd is None:
                self._file_fd = open_log(self.path)
            if self._max_bytes:
                self._append_capped(data)
            else:
                self._append(data)
        except OSError as exc:  # the output still reaches the attempt's tail; the log says why it stopped
            self._error = f"[queuectl: cannot write the log {self.path}: {exc.strerror or exc}]"

    def _append(self, data: bytes | memoryview) -> None:
        assert self._file_fd is not None
        view = memoryview(data)
        while view:
            view = view[os.write(self._file_fd, view):]
        self._size += len(data)

    def _append_capped(self, data: bytes) -> None:
        """The log never passes the cap (but for the marker line): past it, the log is the first half-cap of the
        output, a marker, and the newest quarter-cap. A quarter, not a half, leaves room for a quarter-cap of new
        output before the next cut, so a flood costs one extra copy of each byte."""
        assert self._file_fd is not None
        head, keep = self._max_bytes // 2, self._max_bytes // 4
        self._total += len(data)
        if self._size < head:  # the head is kept whole, as it came
            take = min(head - self._size, len(data))
            self._append(data[:take])
            data = data[take:]
        if self._size + len(data) <= self._max_bytes:
            self._append(data)
            return
        from_data = min(len(data), keep)
        need = min(keep - from_data, self._size - self._tail_at)  # newest bytes still wanted from the file
        older = os.pread(self._file_fd, need, self._size - need) if need > 0 else b""
        newest = older + data[len(data) - from_data:]
        cut = self._total - head - len(newest)
        os.ftruncate(self._file_fd, head)  # O_APPEND: the writes below land at the new end
        self._size = head
        self._append(f"\n[queuectl: {cut} bytes cut to keep this log under {self._max_bytes} bytes]\n".encode())
        self._tail_at = self._size
        self._append(newest)

    def finish(self) -> str:
        """After the leader exited (or was killed): copy what is buffered and give the tail to keep. If a leftover
        process still holds the pipe, go on copying from it in the background."""
        for _ in range(_DRAIN_READS):
            if self._read_fd is None or not self._read_once():
                break
        if self._read_fd is not None:
            if self._watch_timer is not None:
                self._watch_timer.cancel()
            if self._loop is not None:
                self._watch()
            _lingering.add(self)
        tail = bytes(self._tail).decode("utf-8", errors="replace")
        return f"{tail}\n{self._error}" if self._error else tail

    def close(self) -> None:
        if self._watch_timer is not None:
            self._watch_timer.cancel()
            self._watch_timer = None
        if self._read_fd is not None:
            if self._watching and self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._read_fd)
                self._watching = False
            os.close(self._read_fd)
            self._read_fd = None
        if self._file_fd is not None:
            os.close(self._file_fd)
            self._file_fd = None
        _lingering.discard(self)

    def _on_readable(self) -> None:
        self._read_once()

    def _read_once(self) -> bool:
        """Copy one chunk; False once nothing more is there for now (or ever: then the sink is closed)."""
        assert self._read_fd is not None
        try:
            data = os.read(self._read_fd, self._chunk)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if not data:
            self.close()
            return False
        if len(data) == self._chunk < _CHUNK:  # a flood: larger reads from a larger pipe from now on
            self._chunk = _CHUNK
            if _SETPIPE_SZ is not None:
                with contextlib.suppress(OSError):
                    fcntl.fcntl(self._read_fd, _SETPIPE_SZ, _CHUNK)
        self.write(data)
        return True


def close_lingering() -> None:
    """The engine is stopping: stop copying for leftover processes (their next write gets EPIPE)."""
    for sink in list(_lingering):
        with contextlib.suppress(OSError):
            sink.close()
