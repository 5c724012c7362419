"""The log sink's cap, checked against the whole stream for many random chunkings (real files under tmp_path)."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from queuectl.logsink import TAIL_BYTES, LogSink

MARKER = re.compile(rb"\n\[queuectl: (\d+) bytes cut to keep this log under (\d+) bytes\]\n")


def write_in_chunks(path: Path, stream: bytes, cap: int, rnd: random.Random) -> LogSink:
    sink = LogSink(path, max_bytes=cap)
    i = 0
    while i < len(stream):
        n = rnd.choice([1, 7, 100, cap // 3, cap, 3 * cap])
        sink.write(stream[i : i + n])
        i += n
    return sink


@pytest.mark.parametrize("cap", [400, 1000, 4096, 10_000])
def test_a_capped_log_is_the_head_a_true_marker_and_the_newest_output(tmp_path: Path, cap: int) -> None:
    rnd = random.Random(cap)
    for trial in range(150):
        stream = bytes(rnd.randrange(97, 123) for _ in range(rnd.randrange(1, 5 * cap)))
        path = tmp_path / f"{trial}.log"
        sink = write_in_chunks(path, stream, cap, rnd)
        tail = sink.finish()
        sink.close()
        got = path.read_bytes()
        assert tail == stream[-TAIL_BYTES:].decode()
        if len(stream) <= cap:
            assert got == stream, trial
            continue
        found = MARKER.search(got)
        assert found, trial
        head, newest = got[: found.start()], got[found.end() :]
        assert head == stream[: cap // 2], trial
        assert newest and stream.endswith(newest), trial
        assert int(found.group(1)) == len(stream) - len(head) - len(newest), trial  # the marker counts true
        assert len(got) <= cap + len(found.group(0)), (trial, len(got))


def test_an_uncapped_log_keeps_everything_and_nothing_makes_no_file(tmp_path: Path) -> None:
    rnd = random.Random(7)
    stream = bytes(rnd.randrange(256) for _ in range(300_000))
    sink = LogSink(tmp_path / "a.log")
    for start in range(0, len(stream), 65_536):
        sink.write(stream[start : start + 65_536])
    sink.close()
    assert (tmp_path / "a.log").read_bytes() == stream
    LogSink(tmp_path / "b.log").close()
    assert not (tmp_path / "b.log").exists()
