"""Wall-clock jumps: an engine and the CLI run under libfaketime (LD_PRELOAD) with a shared offset file, so that the
wall clock they see jumps a day forward, then two days back, while jobs run (the monotonic clock is left alone:
FAKETIME_DONT_FAKE_MONOTONIC=1). Timeouts count on the monotonic clock, so a jump neither kills a job early nor
stalls one past its timeout; and jobs stay runnable across a jump.

Needs Debian's `faketime` package (libfaketime); without it the tests are skipped and say so.
"""

from __future__ import annotations

import glob
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from queuectl.models import AttemptStatus, JobState
from tests.engine_helpers import Engines, attempts, cli_ok, config_set, enqueue_many, wait_for_states
from tests.torture.support import engine_logs_clean

LIBFAKETIME = next(iter(sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1") +
                               glob.glob("/usr/lib/faketime/libfaketime.so.1"))), None)

pytestmark = pytest.mark.skipif(LIBFAKETIME is None,
                                reason="libfaketime not installed (apt-get install faketime): clock jumps not tested")


class FakeClock:
    """The wall clock of every process started with .env: real time plus the offset in a file, read at every call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.jump("+0")
        self.env = {"LD_PRELOAD": str(LIBFAKETIME), "FAKETIME_TIMESTAMP_FILE": str(path), "FAKETIME_NO_CACHE": "1",
                    "FAKETIME_DONT_FAKE_MONOTONIC": "1"}

    def jump(self, offset: str) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(offset + "\n")
        tmp.replace(self.path)  # atomic: a reader never sees an empty file


@pytest.fixture
def work(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


@pytest.mark.timeout(120)
def test_wall_clock_jumps_neither_kill_a_job_early_nor_stall_its_timeout(
    home: Path, work: Path, tmp_path: Path, figures: dict[str, Any]
) -> None:
    clock = FakeClock(tmp_path / "faketime.rc")
    config_set(home, "kill-grace", "0.2s")
    with Engines(home, tmp_path) as engines:
        engine = engines.start(workers=4, env=clock.env)
        seen = cli_ok(home, "status", "--json", env=clock.env)  # the CLI runs under the same clock
        assert '"engines"' in seen

        # Forward a day while A (1.5 s of work, 5 s timeout) and B (300 s of work, 2 s timeout) run.
        enqueue_many(home, [{"id": "A", "command": "sleep 1.5; echo survived", "timeout": "5s"},
                            {"id": "B", "command": "sleep 300", "timeout": "2s", "max_retries": 0}], cwd=work)
        wait_for_states(home, {"A": JobState.PROCESSING, "B": JobState.PROCESSING}, timeout=20)
        t_start = time.monotonic()
        clock.jump("+1d")
        found = wait_for_states(home, {"B": JobState.DEAD}, timeout=20)
        b_after = round(time.monotonic() - t_start, 2)
        found = wait_for_states(home, {"A": JobState.COMPLETED}, timeout=20)
        a_exit = found["A"].exit_code

        # Back two days while C (300 s of work, 1 s timeout) runs; then D, enqueued after the jump, must run at once.
        enqueue_many(home, [{"id": "C", "command": "sleep 300", "timeout": "1s", "max_retries": 0}], cwd=work)
        wait_for_states(home, {"C": JobState.PROCESSING}, timeout=20)
        t_start = time.monotonic()
        clock.jump("-1d")
        wait_for_states(home, {"C": JobState.DEAD}, timeout=20)
        c_after = round(time.monotonic() - t_start, 2)
        cli_ok(home, "enqueue", "--id", "D", "--", "true", env=clock.env)
        t_start = time.monotonic()
        wait_for_states(home, {"D": JobState.COMPLETED}, timeout=20)
        d_after = round(time.monotonic() - t_start, 2)
        engine.send(signal.SIGTERM)
        code = engine.wait_exit(timeout=20)
        bad = engine_logs_clean([engine])
    figures.update({
        "clock": "libfaketime: +1 day, then -2 days (monotonic untouched)",
        "A (5 s timeout, 1.5 s work) across +1 day": f"exit {a_exit}",
        "B (2 s timeout) killed after (s, from the jump)": b_after,
        "C (1 s timeout) killed after (s, from the jump back)": c_after,
        "D enqueued after the jump back ran after (s)": d_after, "tracebacks": len(bad),
    })
    assert code == 0
    assert a_exit == 0, "a forward jump of the wall clock killed a job before its timeout"
    assert [a.status for a in attempts(home, "A")] == [AttemptStatus.SUCCEEDED]
    assert [a.status for a in attempts(home, "B")] == [AttemptStatus.TIMED_OUT]
    assert b_after < 4, f"B was killed {b_after}s after the jump; its timeout was 2 s"
    assert c_after < 4, f"C was killed {c_after}s after the jump back; its timeout was 1 s"
    assert d_after < 5
    assert not bad


@pytest.mark.timeout(120)
def test_jobs_queued_before_a_backward_clock_jump_still_run_at_once(
    home: Path, work: Path, tmp_path: Path, figures: dict[str, Any]
) -> None:
    """A job enqueued a moment before the clock is stepped back an hour (NTP after a suspended VM, say) is due:
    it must not wait for the wall clock to catch up."""
    clock = FakeClock(tmp_path / "faketime.rc")
    go = work / "go"
    with Engines(home, tmp_path) as engines:
        engine = engines.start(workers=1, env=clock.env)
        cli_ok(home, "enqueue", "--id", "blocker", "--", f"while [ ! -f {go} ]; do sleep 0.05; done", env=clock.env)
        wait_for_states(home, {"blocker": JobState.PROCESSING}, timeout=20)
        cli_ok(home, "enqueue", "--id", "queued", "--", "true", env=clock.env)  # waits for the only worker
        clock.jump("-1h")
        go.touch()
        t_start = time.monotonic()
        try:
            wait_for_states(home, {"queued": JobState.COMPLETED}, timeout=15)
            waited: float | str = round(time.monotonic() - t_start, 2)
        except AssertionError:
            waited = "still waiting after 15 s"
        engine.send(signal.SIGTERM)
        engine.wait_exit(timeout=20)
    figures.update({"clock": "libfaketime: -1 hour while a job waits for a worker",
                    "queued job ran after (s)": waited})
    assert waited != "still waiting after 15 s", "a backward jump of the wall clock stalled a due job"
