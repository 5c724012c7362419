"""orphans.kill_leftovers against real job shells: a job is judged by the engine id its shell exports (see exports),
which is in force over any it inherited, and only processes this user may act on are reported."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from queuectl import exports, orphans, procs
from tests.engine_helpers import process_gone, read_pids, wait_pids_gone, wait_until
from tests.helpers import ROOT

HOST = procs.host_key()


def dead_engine() -> str:
    gone = subprocess.Popen(["true"])  # a pid that no longer runs
    gone.wait()
    return orphans.engine_id(HOST, gone.pid, "dead")


LIVE_ENGINE = orphans.engine_id(HOST, os.getpid(), "live")  # this test's process stands for a running engine


@pytest.fixture
def shells(tmp_path: Path) -> Iterator[Callable[..., int]]:
    """start(engine_id, inherited=None) -> the pid of a job shell that exports engine_id and starts nothing (it
    blocks opening a FIFO), its environment carrying `inherited` as QUEUECTL_ENGINE_ID if given."""
    started: list[subprocess.Popen[bytes]] = []

    def start(engine_id: str, inherited: str | None = None) -> int:
        n = len(started)
        fifo, pid_file = tmp_path / f"fifo{n}", tmp_path / f"pid{n}"
        os.mkfifo(fifo)
        line = exports.line({"QUEUECTL_JOB_ID": f"job{n}", orphans.ENGINE_ENV: engine_id},
                            f"echo $$ > {pid_file}; read line < {fifo}")
        env = {**os.environ, orphans.ENGINE_ENV: inherited} if inherited else None
        started.append(subprocess.Popen(line, shell=True, env=env, start_new_session=True))
        return wait_until(lambda: (read_pids(pid_file) or [None])[0], timeout=10, what="the shell's pid")

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_a_live_engines_job_shell_is_left_alone_whatever_engine_id_it_inherited(shells: Callable[..., int]) -> None:
    """An engine started from a job of an engine now gone inherits that engine's id: so do its own jobs' shells,
    which export the live engine's. Taking the inherited one, each sweep killed the live engine's jobs."""
    shell = shells(LIVE_ENGINE, inherited=dead_engine())
    assert orphans.kill_leftovers(HOST, "another-engine") == []
    assert not process_gone(shell)


def test_a_dead_engines_job_shell_is_killed_whatever_engine_id_it_inherited(shells: Callable[..., int]) -> None:
    shell = shells(dead_engine(), inherited=LIVE_ENGINE)
    assert orphans.kill_leftovers(HOST, "another-engine") == ["job0"]
    wait_pids_gone([shell], timeout=5)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv (util-linux)")
def test_another_users_job_shells_are_neither_killed_nor_reported(shells: Callable[..., int]) -> None:
    """A command line is world-readable, an environment is not: a sweep run by another user saw root's job shells
    by their exports, reported them killed every 10 s, and could not kill them."""
    shell = shells(dead_engine())
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); from queuectl import orphans, procs; "
            "print(orphans.kill_leftovers(procs.host_key(), 'another-engine'))")
    done = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", code],
                          capture_output=True, text=True, timeout=30, cwd="/", check=False)
    if done.returncode != 0 and "Permission denied" in done.stderr:
        pytest.skip(f"user 65534 cannot run this Python or read this checkout: {done.stderr.strip()[-200:]}")
    assert (done.returncode, done.stdout) == (0, "[]\n"), done.stderr
    assert not process_gone(shell)
