"""Output floods: a job writing 1 GiB to stdout must not grow the engine (its output goes straight to a file the
engine never reads whole), and with `log-max-bytes 10MiB` its log file stays near 10 MiB: the runner cuts it twice
a second while the job runs, and once more when it exits, keeping the head and the newest tail."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from queuectl.models import JobState
from queuectl.paths import attempt_log_path
from tests.engine_helpers import Engines, attempts, cli_ok, enqueue, wait_for_states
from tests.torture.support import engine_logs_clean, vm_kib

GIB = 1 << 30
CAP = 10 << 20
RSS_LIMIT_KIB = 20 * 1024


@pytest.mark.timeout(240)
@pytest.mark.parametrize("command", [f"head -c {GIB} /dev/zero", f"yes 'queuectl flood' | head -c {GIB}"],
                         ids=["zeros", "lines"])
def test_a_job_writing_1gib_to_stdout_keeps_engine_rss_and_its_log_bounded(
    home: Path, tmp_path: Path, figures: dict[str, Any], command: str
) -> None:
    cli_ok(home, "config", "set", "log-max-bytes", "10MiB")
    with Engines(home, tmp_path) as engines:
        engine = engines.start(workers=2)
        # Warm up: a job with some output, so that what a first job loads is in the baseline.
        enqueue(home, "seq 1 20000", id="warm-up")
        wait_for_states(home, {"warm-up": JobState.COMPLETED}, timeout=30)
        rss_before, hwm_before = vm_kib(engine.pid, "VmRSS"), vm_kib(engine.pid, "VmHWM")
        log_path = attempt_log_path(home, "flood", 1)
        biggest = [0]
        done = threading.Event()

        def watch() -> None:  # the log's size as the job runs: the largest seen
            while not done.is_set():
                with contextlib.suppress(FileNotFoundError):
                    biggest[0] = max(biggest[0], log_path.stat().st_size)
                time.sleep(0.01)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        t0 = time.monotonic()
        enqueue(home, command, id="flood")
        found = wait_for_states(home, {"flood": JobState.COMPLETED}, timeout=180)
        took = round(time.monotonic() - t0, 1)
        done.set()
        watcher.join(5)
        rss_after, hwm_after = vm_kib(engine.pid, "VmRSS"), vm_kib(engine.pid, "VmHWM")
        (attempt,) = attempts(home, "flood")
        final = Path(attempt.log_path or "").stat().st_size
        head = Path(attempt.log_path or "").read_bytes()[:64]
        assert engine.returncode is None
        bad = engine_logs_clean([engine])
    figures.update({
        "bytes written by the job": GIB, "log-max-bytes": CAP, "final log size": final,
        "largest log size seen while running": biggest[0],
        "engine RSS before / after KiB": f"{rss_before} / {rss_after}",
        "engine peak RSS (VmHWM) growth KiB": hwm_after - hwm_before, "seconds": took, "tracebacks": len(bad),
    })
    assert found["flood"].exit_code == 0
    assert hwm_after - hwm_before < RSS_LIMIT_KIB, f"engine peak RSS grew by {hwm_after - hwm_before} KiB"
    assert rss_after - rss_before < RSS_LIMIT_KIB
    assert final <= CAP + 200, f"log is {final} bytes after the final cut (cap {CAP})"
    text = Path(attempt.log_path or "").read_bytes()
    assert b"bytes cut to keep this log under" in text
    assert head == (b"\0" * 64 if "zero" in command else (b"queuectl flood\n" * 5)[:64])
    assert (attempt.output_tail or "") != ""
    assert not bad
