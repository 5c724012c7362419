"""runner.run_command with real processes: exit codes, start failures, signals, timeouts that kill the whole process
tree, SIGKILL after kill-grace, output streamed to the attempt's log file, cancellation."""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from queuectl import jobspec, procs
from queuectl.logsink import TAIL_BYTES
from queuectl.models import Outcome
from queuectl.runner import ResourceShortage, run_command
from tests.engine_helpers import await_until, process_gone, read_pids, wait_pids_gone
from tests.helpers import out_of_files


@pytest.fixture
def leftovers() -> Iterator[list[int]]:
    """Pids a test saw; whatever still runs of them is killed at teardown (only if a test failed midway)."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if not process_gone(pid):
            os.kill(pid, signal.SIGKILL)


async def run(command: str, cwd: Path, log: Path, *, timeout_s: float | None = 30.0, kill_grace_s: float = 0.5,
              log_max_bytes: int = 0, env: dict[str, str] | None = None) -> Outcome:
    return await run_command(command, cwd=str(cwd), env=env if env is not None else dict(os.environ),
                             log_path=log, timeout_s=timeout_s, kill_grace_s=kill_grace_s, log_max_bytes=log_max_bytes)


# ---- exit codes ---------------------------------------------------------------------------------------------------


async def test_exit_zero_is_success_with_output_in_log_and_tail(work: Path, tmp_path: Path) -> None:
    log = tmp_path / "logs" / "job" / "1.log"  # parent directories are created
    outcome = await run("echo hello; echo oops >&2", work, log)
    assert outcome.exit_code == 0
    assert outcome.succeeded
    assert outcome.error is None
    assert not outcome.timed_out
    assert outcome.log_path == str(log)
    assert log.read_text() == "hello\noops\n"  # stdout and stderr in one file
    assert outcome.output_tail == "hello\noops\n"
    assert outcome.started_at <= outcome.finished_at


async def test_non_zero_exit_is_a_failure_with_the_code(work: Path, tmp_path: Path) -> None:
    outcome = await run("echo before; exit 3", work, tmp_path / "a.log")
    assert outcome.exit_code == 3
    assert not outcome.succeeded
    assert outcome.error == "exit code 3"
    assert outcome.output_tail == "before\n"


async def test_missing_command_exits_127_and_says_so(work: Path, tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    outcome = await run("no-such-command-queuectl-test", work, log)
    assert outcome.exit_code == 127
    assert not outcome.succeeded
    assert outcome.error is not None
    assert "127" in outcome.error
    assert "not found" in outcome.error
    assert "no-such-command-queuectl-test" in log.read_text()  # the shell's own message is kept


@pytest.mark.parametrize("command", ["-x", "--version", "-e echo hi", "+x echo hi"])
async def test_a_command_starting_with_a_dash_is_a_command_not_found(command: str, work: Path, tmp_path: Path) -> None:
    """/bin/sh -c took it for its own options: exit 2, "Illegal option"."""
    outcome = await run(command, work, tmp_path / "a.log")
    assert (outcome.exit_code, outcome.error) == (127, "exit code 127 (command not found)")
    assert "not found" in outcome.output_tail


async def test_command_that_cannot_be_executed_exits_126(work: Path, tmp_path: Path) -> None:
    script = work / "not-executable.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    outcome = await run(str(script), work, tmp_path / "a.log")
    assert outcome.exit_code == 126
    assert outcome.error is not None
    assert "126" in outcome.error


async def test_missing_cwd_cannot_start_and_is_recorded(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    missing = tmp_path / "gone"
    outcome = await run("true", missing, log)
    assert outcome.exit_code is None
    assert not outcome.succeeded
    assert outcome.error is not None
    assert outcome.error.startswith("cannot start")
    assert str(missing) in outcome.error
    assert str(missing) in log.read_text()
    assert str(missing) in outcome.output_tail


async def test_a_working_directory_that_is_a_file_cannot_start_and_says_so(tmp_path: Path) -> None:
    """Before, it said "does not exist" of a path that exists."""
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    outcome = await run("true", not_a_dir, tmp_path / "a.log")
    assert outcome.exit_code is None and not outcome.succeeded
    assert outcome.error == f"cannot start: working directory {not_a_dir} is not a directory"


@pytest.mark.parametrize(("command", "cwd", "why"), [
    ("true", "/tmp\x00x", "cannot start: embedded null byte"),
    ("echo \ud800", "/tmp", "cannot start: 'utf-8' codec can't encode character '\\ud800'"),
])
async def test_what_no_process_can_be_given_cannot_start_and_says_why(
    tmp_path: Path, command: str, cwd: str, why: str
) -> None:
    """A row queuectl's own checks did not write (they refuse both). Before, it raised out of run_command."""
    outcome = await run(command, Path(cwd), tmp_path / "a.log")
    assert outcome.exit_code is None and not outcome.succeeded
    assert outcome.error is not None and outcome.error.startswith(why), outcome.error
    assert (tmp_path / "a.log").read_text().startswith(f"queuectl: {why}")


async def test_out_of_files_is_a_shortage_not_an_outcome_and_starts_nothing(tmp_path: Path) -> None:
    """The command is not at fault: the caller (the engine) tries it again later without counting the attempt."""
    marker = tmp_path / "ran"
    with out_of_files(), pytest.raises(ResourceShortage, match="Too many open files"):
        await run(f"touch {marker}", tmp_path, tmp_path / "a.log")
    assert not marker.exists()
    assert not (tmp_path / "a.log").exists()
    assert (await run(f"touch {marker}", tmp_path, tmp_path / "a.log")).succeeded  # files back: it runs


async def test_death_by_signal_is_a_failure_naming_the_signal(work: Path, tmp_path: Path) -> None:
    outcome = await run("kill -KILL $$", work, tmp_path / "a.log")
    assert outcome.exit_code == -signal.SIGKILL
    assert not outcome.succeeded
    assert not outcome.timed_out
    assert outcome.error == "killed by SIGKILL"


async def test_stdin_is_dev_null_and_cwd_is_the_jobs(work: Path, tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    outcome = await run("cat; pwd", work, log, timeout_s=10)  # cat would block forever on an open stdin
    assert outcome.exit_code == 0
    assert log.read_text() == f"{work}\n"


async def test_environment_is_passed_to_the_command(work: Path, tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    env = {**os.environ, "QUEUECTL_JOB_ID": "job-7", "QUEUECTL_ATTEMPT": "3"}
    await run('echo "$QUEUECTL_JOB_ID/$QUEUECTL_ATTEMPT"', work, log, env=env)
    assert log.read_text() == "job-7/3\n"


#: Values a shell must not take for syntax: quotes, an end of command, an expansion, a newline, a backslash.
AWKWARD = ["it's", 'say "hi"; exit 9', "$(touch pwned) `touch pwned` $HOME", "two\nlines", "back\\slash '", "", "é ü"]


async def test_variables_reach_the_command_and_its_children_exactly(work: Path, tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    variables = {f"V{i}": value for i, value in enumerate(AWKWARD)}
    script = "; ".join(f'printf "%s|" "$V{i}"' for i in range(len(AWKWARD)))
    outcome = await run_command(f"{script}; sh -c 'printf \"%s\" \"$V0\"'", cwd=str(work), variables=variables,
                                log_path=log, timeout_s=30, kill_grace_s=1)
    assert outcome.exit_code == 0, outcome.error
    assert log.read_text() == "|".join(AWKWARD) + "|it's"
    assert not (work / "pwned").exists()


async def test_variables_override_the_environment_given(work: Path, tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    await run_command('echo "$A $B"', cwd=str(work), env={**os.environ, "A": "env", "B": "env"},
                      variables={"B": "ours"}, log_path=log, timeout_s=30, kill_grace_s=1)
    assert log.read_text() == "env ours\n"


async def test_the_shell_exports_the_variables_and_procs_reads_them_from_its_command_line(
    work: Path, tmp_path: Path
) -> None:
    """The shell's own environment lacks them (see exports); procs.environ, which finds a job's processes, has them."""
    pids = work / "pid"
    os.mkfifo(f"{pids}.fifo")
    task = asyncio.create_task(run_command(  # `read` blocks opening the FIFO: the shell starts nothing
        f"echo $$ > {pids}; read line < {pids}.fifo", cwd=str(work), variables={"QUEUECTL_JOB_ID": "j 'x'"},
        log_path=tmp_path / "a.log", timeout_s=None, kill_grace_s=0.5))
    (shell,) = await await_until(lambda: read_pids(pids), timeout=10, what="the shell's pid")
    try:
        assert b"QUEUECTL_JOB_ID=j 'x'" not in own_environment(shell)
        assert b"QUEUECTL_JOB_ID=j 'x'" in procs.environ(str(shell))
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def own_environment(pid: int) -> list[bytes]:
    with open(f"/proc/{pid}/environ", "rb") as f:
        return f.read().split(b"\0")


async def test_marks_naming_a_variable_not_given_are_refused_before_anything_starts(work: Path, tmp_path: Path
                                                                                    ) -> None:
    """Fewer marks than meant would match other commands' processes too, and a stop would kill them."""
    with pytest.raises(ValueError, match="QUEUECTL_ATTEMPT"):
        await run_command(f"touch {work}/ran", cwd=str(work), variables={"QUEUECTL_JOB_ID": "j"},
                          marked_by=("QUEUECTL_JOB_ID", "QUEUECTL_ATTEMPT"), log_path=tmp_path / "a.log",
                          timeout_s=30, kill_grace_s=1)
    assert not (work / "ran").exists()


async def test_a_variable_with_a_newline_leaves_the_shells_line_numbers_alone(work: Path, tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    outcome = await run_command('echo "$V"\necho (', cwd=str(work), variables={"V": "two\nlines"}, log_path=log,
                                timeout_s=30, kill_grace_s=1)
    assert outcome.exit_code == 2
    assert ": 2: Syntax error" in log.read_text()


@pytest.mark.parametrize("command", ["-x", "+x"])
async def test_a_command_starting_with_a_dash_after_the_exports_is_a_command_not_found(
    command: str, work: Path, tmp_path: Path
) -> None:
    outcome = await run_command(command, cwd=str(work), variables={"A": "1"}, log_path=tmp_path / "a.log",
                                timeout_s=30, kill_grace_s=1)
    assert (outcome.exit_code, outcome.error) == (127, "exit code 127 (command not found)")


@pytest.mark.parametrize("start", ["echo", "-"])
async def test_a_command_too_long_to_follow_the_exports_gets_them_in_its_environment(
    start: str, work: Path, tmp_path: Path
) -> None:
    """/bin/sh -c takes one argument of under 128 KiB: the longest command queuectl accepts leaves no room for the
    exports, which then go with the environment instead."""
    log = tmp_path / "a.log"
    command = f'{start} "$QUEUECTL_JOB_ID" #'
    command += "#" * (jobspec.MAX_COMMAND_BYTES - len(command))
    outcome = await run_command(command, cwd=str(work), variables={"QUEUECTL_JOB_ID": "long"}, log_path=log,
                                timeout_s=30, kill_grace_s=1)
    if start == "echo":
        assert (outcome.exit_code, log.read_text()) == (0, "long\n")
    else:
        assert (outcome.exit_code, outcome.error) == (127, "exit code 127 (command not found)")


# ---- timeouts -------------------------------------------------------------------------------------------------------


async def test_timeout_kills_the_whole_process_tree(work: Path, tmp_path: Path, leftovers: list[int]) -> None:
    """`sh -c 'sleep 300 & sleep 300 & wait'`, with a grandchild in a subshell too: every pid is gone after."""
    pids = work / "pids"
    command = (
        f"sh -c 'echo $$ >> {pids}; sleep 300 & echo $! >> {pids}; sleep 300 & echo $! >> {pids}; "
        f"(sleep 300 & echo $! >> {pids}; wait) & wait'"
    )
    task = asyncio.create_task(run(command, work, tmp_path / "a.log", timeout_s=1.0, kill_grace_s=0.5))
    seen = await await_until(lambda: len(read_pids(pids)) == 4 and read_pids(pids), timeout=10,
                             what="the tree to write its 4 pids")
    leftovers.extend(seen)
    assert not any(process_gone(p) for p in seen)
    outcome = await asyncio.wait_for(task, 20)
    assert outcome.timed_out
    assert not outcome.succeeded
    assert outcome.error == "timed out after 1s"
    await asyncio.to_thread(wait_pids_gone, seen, timeout=5)


@pytest.mark.parametrize("stop", ["timeout", "cancel"])
async def test_descendants_that_left_the_group_are_found_by_their_marks_and_killed_too(
    work: Path, tmp_path: Path, leftovers: list[int], stop: str
) -> None:
    """A descendant started with setsid (a daemon) leaves the command's process group, so killing the group missed
    it. It still carries the attempt's marks in its environment: a timeout, a cancel or a stop finds it by them."""
    pids = work / "pids"
    variables = {"QUEUECTL_JOB_ID": "escaper", "QUEUECTL_ATTEMPT": "3"}
    command = (f"setsid sh -c 'echo $$ >> {pids}; sleep 300 & echo $! >> {pids}; wait' & "
               f"echo $$ >> {pids}; sleep 300")
    task = asyncio.create_task(run_command(
        command, cwd=str(work), variables=variables, log_path=tmp_path / "a.log",
        timeout_s=1.0 if stop == "timeout" else None, kill_grace_s=0.5, marked_by=variables))
    seen = await await_until(lambda: len(read_pids(pids)) == 3 and read_pids(pids), timeout=10,
                             what="the command and its escaped daemon to write their 3 pids")
    leftovers.extend(seen)
    assert len({os.getpgid(p) for p in seen}) == 2  # the daemon and its child lead a group of their own
    if stop == "timeout":
        assert (await asyncio.wait_for(task, 20)).timed_out
    else:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 20)
    await asyncio.to_thread(wait_pids_gone, seen, timeout=5)


async def test_timeout_sends_sigterm_first_and_a_cooperative_command_ends_before_kill_grace(
    work: Path, tmp_path: Path
) -> None:
    log = tmp_path / "a.log"
    command = "trap 'echo got-term; exit 143' TERM; echo ready; while :; do sleep 0.05; done"
    t0 = time.monotonic()
    outcome = await run(command, work, log, timeout_s=0.5, kill_grace_s=10)
    took = time.monotonic() - t0
    assert outcome.timed_out
    assert "got-term" in log.read_text()
    assert took < 5, f"a command that exits on SIGTERM must not wait out the 10 s kill-grace (took {took:.1f}s)"


async def test_command_ignoring_sigterm_is_sigkilled_after_kill_grace(
    work: Path, tmp_path: Path, leftovers: list[int]
) -> None:
    pids = work / "pids"
    # SIG_IGN is inherited across exec: the sleep children ignore SIGTERM too.
    command = f"trap '' TERM; echo $$ >> {pids}; sleep 300 & echo $! >> {pids}; wait; wait; wait"
    t0 = time.monotonic()
    task = asyncio.create_task(run(command, work, tmp_path / "a.log", timeout_s=0.5, kill_grace_s=1.0))
    seen = await await_until(lambda: len(read_pids(pids)) == 2 and read_pids(pids), timeout=10,
                             what="the command to write its pids")
    leftovers.extend(seen)
    outcome = await asyncio.wait_for(task, 20)
    took = time.monotonic() - t0
    assert outcome.timed_out
    assert outcome.exit_code == -signal.SIGKILL
    assert took >= 0.5 + 1.0 - 0.1, f"SIGKILL came before kill-grace ran out ({took:.2f}s)"
    assert took < 8
    await asyncio.to_thread(wait_pids_gone, seen, timeout=5)


async def test_no_timeout_lets_a_command_run_to_its_end(work: Path, tmp_path: Path) -> None:
    outcome = await run("sleep 0.3; echo done", work, tmp_path / "a.log", timeout_s=None)
    assert outcome.succeeded
    assert outcome.output_tail == "done\n"


# ---- output ---------------------------------------------------------------------------------------------------------


async def test_output_is_streamed_to_the_log_while_the_command_runs(work: Path, tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    go = work / "go"
    task = asyncio.create_task(run(f"echo first; while [ ! -f {go} ]; do sleep 0.02; done; echo second", work, log))
    await await_until(lambda: log.exists() and log.read_text() == "first\n", timeout=10,
                      what="the first line in the log while the command runs")
    assert not task.done()
    go.touch()
    outcome = await asyncio.wait_for(task, 10)
    assert outcome.succeeded
    assert log.read_text() == "first\nsecond\n"


async def test_only_a_bounded_tail_is_kept_with_the_attempt(work: Path, tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    outcome = await run("head -c 100000 /dev/zero | tr '\\0' x; echo; echo THE-END", work, log)
    assert outcome.succeeded
    assert log.stat().st_size == 100000 + 1 + len("THE-END\n")
    assert len(outcome.output_tail.encode()) <= TAIL_BYTES
    assert outcome.output_tail.endswith("x\nTHE-END\n")


async def test_non_utf8_output_is_kept_byte_for_byte_and_decoded_leniently(work: Path, tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    outcome = await run(r"printf 'caf\351 \377\376 ok\n'", work, log)
    assert outcome.succeeded
    assert log.read_bytes() == b"caf\xe9 \xff\xfe ok\n"
    assert "\ufffd" in outcome.output_tail
    assert outcome.output_tail.endswith(" ok\n")


async def test_tail_cut_inside_a_multibyte_character_is_still_readable(work: Path, tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    # 3-byte characters: a tail of TAIL_BYTES starts mid-character unless TAIL_BYTES is a multiple of 3
    outcome = await run("i=0; while [ $i -lt 3000 ]; do printf '\\342\\202\\254'; i=$((i+1)); done", work, log)
    assert outcome.succeeded
    assert log.stat().st_size == 9000
    assert outcome.output_tail.strip("\ufffd").strip("€") == ""
    assert outcome.output_tail.count("€") >= TAIL_BYTES // 3 - 1


async def test_megabytes_of_output_go_to_the_file_not_to_memory(work: Path, tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    size = 48 * 1024 * 1024
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB, a high-water mark
    outcome = await run(f"head -c {size} /dev/zero | tr '\\0' y; echo END", work, log, timeout_s=60)
    grew_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert outcome.succeeded
    assert log.stat().st_size == size + 4
    assert outcome.output_tail.endswith("yyyy\nEND\n") or outcome.output_tail.endswith("yyyyEND\n")
    assert grew_kib < 16 * 1024, f"runner's memory grew by {grew_kib} KiB for {size} bytes of output"


async def test_log_max_bytes_keeps_a_capped_log_with_head_and_tail(work: Path, tmp_path: Path) -> None:
    """A slow writer: the cap is applied while it runs; the head, a marker and the newest output remain."""
    log = tmp_path / "a.log"
    command = ("echo HEAD; i=0; while [ $i -lt 15 ]; do head -c 50000 /dev/zero | tr '\\0' z; echo; "
               "i=$((i+1)); sleep 0.1; done; echo TAIL-END")
    outcome = await run(command, work, log, log_max_bytes=100_000)
    assert outcome.succeeded
    text = log.read_text()
    assert text.startswith("HEAD\n")
    assert "bytes cut to keep this log under 100000 bytes" in text
    assert text.endswith("TAIL-END\n")
    assert outcome.output_tail.endswith("TAIL-END\n")
    assert log.stat().st_size <= 100_000 + 50_000 + 200
    assert log.stat().st_size <= 100_000 + 200  # the cap holds at every write, the marker line aside


async def test_log_max_bytes_also_bounds_a_command_that_writes_fast_and_exits(work: Path, tmp_path: Path) -> None:
    """log-max-bytes is "the largest log file per attempt": it must hold for output written faster than the
    engine reads it too (here 5 MB in a few milliseconds)."""
    log = tmp_path / "a.log"
    outcome = await run("echo HEAD; head -c 5000000 /dev/zero | tr '\\0' z; echo; echo TAIL-END", work, log,
                        log_max_bytes=100_000)
    assert outcome.succeeded
    assert log.stat().st_size <= 100_000 + 200, f"log is {log.stat().st_size} bytes with log_max_bytes=100000"
    assert log.read_text().endswith("TAIL-END\n")


async def test_a_command_that_prints_nothing_leaves_no_log_file(work: Path, tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    outcome = await run("true", work, log)
    assert outcome.succeeded
    assert outcome.output_tail == ""
    assert not log.exists()


async def test_an_unwritable_log_keeps_the_output_in_the_tail_and_says_why(work: Path, tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.mkdir()  # a directory where the log file goes
    outcome = await run("echo still-here", work, log)
    assert outcome.succeeded  # the command's result does not depend on its log
    assert outcome.output_tail.startswith("still-here\n")
    assert f"cannot write the log {log}" in outcome.output_tail


async def test_command_closing_stdout_early_is_recorded_normally(work: Path, tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    outcome = await run("echo out; exec 1>&-; echo err-after-close >&2; exec 2>&-; sleep 0.2; exit 4", work, log)
    assert outcome.exit_code == 4  # the end of output is not the end of the command
    assert log.read_text() == "out\nerr-after-close\n"


async def test_daemon_holding_the_output_open_does_not_block_completion(
    work: Path, tmp_path: Path, leftovers: list[int]
) -> None:
    """A command that leaves a background process (holding the log fd) completes when its shell exits."""
    pids = work / "pids"
    t0 = time.monotonic()
    outcome = await run(f"sleep 300 & echo $! > {pids}; echo parent-done", work, tmp_path / "a.log")
    leftovers.extend(read_pids(pids))
    assert outcome.succeeded
    assert outcome.output_tail == "parent-done\n"
    assert time.monotonic() - t0 < 10


async def test_output_of_a_process_left_behind_still_reaches_the_log(
    work: Path, tmp_path: Path, leftovers: list[int]
) -> None:
    """The attempt ends with its leader; what a leftover process writes afterwards is still copied to the log."""
    pids, go, log = work / "pids", work / "go", tmp_path / "a.log"
    outcome = await run(f"(while [ ! -f {go} ]; do sleep 0.02; done; echo from-the-leftover) & echo $! > {pids}; "
                        "echo leader-done", work, log)
    leftovers.extend(read_pids(pids))
    assert outcome.succeeded
    assert outcome.output_tail == "leader-done\n"
    go.touch()
    await await_until(lambda: log.read_text() == "leader-done\nfrom-the-leftover\n", timeout=10,
                      what="the leftover's line in the log")


# ---- cancellation ---------------------------------------------------------------------------------------------------


async def test_cancellation_terminates_the_process_group_before_returning(
    work: Path, tmp_path: Path, leftovers: list[int]
) -> None:
    pids = work / "pids"
    command = f"echo $$ >> {pids}; sleep 300 & echo $! >> {pids}; (sleep 300 & echo $! >> {pids}; wait) & wait"
    task = asyncio.create_task(run(command, work, tmp_path / "a.log", timeout_s=None, kill_grace_s=0.5))
    seen = await await_until(lambda: len(read_pids(pids)) == 3 and read_pids(pids), timeout=10,
                             what="the command to write its pids")
    leftovers.extend(seen)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)
    # the leader is reaped and SIGKILL went to the group before CancelledError came out: at most a moment of dying
    await asyncio.to_thread(wait_pids_gone, seen, timeout=2)


async def test_cancellation_of_a_command_ignoring_sigterm_still_kills_it(
    work: Path, tmp_path: Path, leftovers: list[int]
) -> None:
    pids = work / "pids"
    task = asyncio.create_task(run(f"trap '' TERM; echo $$ >> {pids}; while :; do sleep 0.05; done", work,
                                   tmp_path / "a.log", timeout_s=None, kill_grace_s=0.3))
    seen = await await_until(lambda: read_pids(pids), timeout=10, what="the command to start")
    leftovers.extend(seen)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)
    await asyncio.to_thread(wait_pids_gone, seen, timeout=2)
