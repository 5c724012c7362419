"""The engine's event log: its cached timestamps read exactly as timefmt.iso would write them."""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import threading
from pathlib import Path
from typing import TextIO

from hypothesis import given
from hypothesis import strategies as st

from queuectl.api import Queue
from queuectl.engine import Engine, EngineOptions
from queuectl.events import EventLog
from queuectl.timefmt import iso
from tests.helpers import wait_until

# Whole seconds, milliseconds on a rounding edge, and arbitrary floats up to the year 2100.
times = st.one_of(
    st.floats(min_value=0, max_value=4.1e9, allow_nan=False),
    st.integers(min_value=0, max_value=4_100_000_000).map(lambda s: s + 0.9995),
    st.integers(min_value=0, max_value=4_100_000_000).map(lambda s: s + 0.9999996),
)


@given(st.lists(times, min_size=1, max_size=20))
def test_stamps_match_iso_whatever_the_order_of_times(stamps: list[float]) -> None:
    log = EventLog(stream=io.StringIO())
    for now in stamps:  # the cached second changes, repeats and goes back
        assert log._stamp(now) == iso(now)


def test_a_json_line_carries_the_stamp_and_the_fields() -> None:
    out = io.StringIO()
    EventLog("json", out).emit("completed", "ignored in json", job="j1", attempt=2)
    line = json.loads(out.getvalue())
    assert line["event"] == "completed" and line["job"] == "j1" and line["attempt"] == 2
    assert line["ts"].endswith("Z") and len(line["ts"]) == len("2026-01-01T00:00:00.000Z")


def test_a_blocked_output_never_blocks_the_engine_and_what_piles_up_past_the_cap_is_counted() -> None:
    """A terminal paused with Ctrl-S or a pipe nobody reads: a write blocks. Before, it blocked the event loop."""
    read_fd, write_fd, filler = _full_pipe()
    os.set_blocking(write_fd, True)  # the next write blocks until someone reads
    stream = os.fdopen(write_fd, "w")
    log = EventLog(stream=stream, max_pending_lines=5)
    emitting = threading.Thread(target=lambda: [log.emit("e", f"line {n}") for n in range(50)])
    emitting.start()
    emitting.join(10)
    assert not emitting.is_alive(), "emit() blocked on the full pipe"
    lines = _close_and_read(log, stream, read_fd)[filler:].decode().splitlines()
    numbers = [int(line.rsplit(" ", 1)[1]) for line in lines if " line " in line]
    [marker] = [line for line in lines if "dropped while the log's output was blocked" in line]
    dropped = int(marker.split()[1])
    assert dropped > 0 and len(numbers) + dropped == 50
    assert numbers == sorted(numbers) and numbers[0] == 0  # in order, the oldest kept


def _full_pipe() -> tuple[int, int, int]:
    """A pipe (4 KiB where the system allows) filled up, its write end non-blocking: (read, write, bytes in it)."""
    read_fd, write_fd = os.pipe()
    fcntl.fcntl(write_fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), 4096)
    os.set_blocking(write_fd, False)
    filler = 0
    with contextlib.suppress(BlockingIOError):
        while True:
            filler += os.write(write_fd, b"x" * 512)
    return read_fd, write_fd, filler


def _close_and_read(log: EventLog, stream: TextIO, read_fd: int) -> bytes:
    """Read the pipe to its end while the log closes (writing what it holds), then the stream: all it received."""
    received = bytearray()

    def read_to_eof() -> None:
        while chunk := os.read(read_fd, 65536):
            received.extend(chunk)
        os.close(read_fd)

    reading = threading.Thread(target=read_to_eof)
    reading.start()
    log.close(wait_s=10)
    stream.close()
    reading.join(10)
    return bytes(received)


def test_lines_reach_an_output_its_owner_made_non_blocking_once_it_takes_more() -> None:
    """A process manager may hand the engine a non-blocking stderr: a full pipe then refuses a write (EAGAIN)
    instead of blocking it. Those lines were lost."""
    read_fd, write_fd, filler = _full_pipe()  # and left non-blocking
    stream = os.fdopen(write_fd, "w")
    log = EventLog(stream=stream)
    for n in range(3):
        log.emit("e", f"line {n}")
    writer = log._writer
    assert writer is not None
    wait_until(lambda: not writer._lines, 10)  # taken by the writer: it has met the full pipe
    received = _close_and_read(log, stream, read_fd)
    assert [line.rsplit(" ", 2)[1:] for line in received[filler:].decode().splitlines()] == [
        ["line", "0"], ["line", "1"], ["line", "2"]]


async def test_an_engine_closes_the_log_it_made_itself(tmp_path: Path) -> None:
    """Engine(store, options) without a log writes to stderr through a thread: run() must not leave it behind."""
    async with Queue(tmp_path) as q:
        before = {t.ident for t in threading.enumerate()}
        await Engine(q.store, EngineOptions(home=tmp_path, until_idle=True)).run(handle_signals=False)
    assert [t.name for t in threading.enumerate() if t.ident not in before and t.name == "queuectl-log"] == []
