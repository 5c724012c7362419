"""Run one shell command: its own session and process group, its output copied to a log file (see logsink), a
timeout that terminates the whole group (SIGTERM, a grace period, SIGKILL), and with it the processes that left the
group (setsid, daemons) but carry the command's marks in their environment. Knows nothing of the store."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import subprocess
import time
from collections.abc import Callable, Collection, Mapping
from pathlib import Path

from queuectl import exports
from queuectl.aio import finish_even_if_cancelled
from queuectl.logsink import LogSink
from queuectl.models import Outcome
from queuectl.procs import marked_groups

_devnull: int | None = None

#: The most bytes Linux passes in one argument (MAX_ARG_STRLEN), its NUL included: what /bin/sh -c is given.
_MAX_ARGUMENT_BYTES = 128 << 10

#: Why a command could not start that says nothing of the command: the engine's process is out of open files
#: (EMFILE), the system is (ENFILE), the user's process limit is reached (EAGAIN from fork), memory is short.
_SHORTAGES = frozenset({errno.EMFILE, errno.ENFILE, errno.EAGAIN, errno.ENOMEM})


class ResourceShortage(Exception):
    """The command could not be started for want of files, processes or memory: not the command's fault, so the
    caller should try it again later rather than count a failed attempt. Nothing was started."""


def devnull() -> int:
    """One /dev/null for every command's stdin, opened once: Popen's stdin=DEVNULL opens and closes it for each."""
    global _devnull
    if _devnull is None:
        _devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    return _devnull


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}"
    if code == 127:
        return "exit code 127 (command not found)"
    if code == 126:
        return "exit code 126 (command cannot be executed)"
    return f"exit code {code}"


def kill_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def terminate_group(
    proc: asyncio.subprocess.Process, kill_grace_s: float, marks: Collection[bytes] = ()
) -> None:
    """SIGTERM to the whole group, wait up to kill_grace_s for the leader, then SIGKILL the group: a child
    that ignores SIGTERM, or one the leader left behind, does not survive either way. So do the groups of the
    processes whose environment holds every one of marks (the command's, started with them: a descendant that
    left the group with setsid still carries them). Completes even if the caller is cancelled, so that a stop
    never leaves the group running or the leader unreaped."""
    await finish_even_if_cancelled(_terminate(proc, kill_grace_s, marks))


async def _terminate(proc: asyncio.subprocess.Process, kill_grace_s: float, marks: Collection[bytes]) -> None:
    kill_group(proc.pid, signal.SIGTERM)
    escaped = await _escaped(proc.pid, marks)  # a /proc scan: in a thread, and only when a command is stopped
    for group in escaped:
        kill_group(group, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), kill_grace_s)
    kill_group(proc.pid, signal.SIGKILL)
    for group in escaped | await _escaped(proc.pid, marks):  # and any that left meanwhile
        kill_group(group, signal.SIGKILL)
    await proc.wait()


async def _escaped(own_group: int, marks: Collection[bytes]) -> set[int]:
    if not marks:
        return set()
    return await asyncio.to_thread(marked_groups, marks) - {own_group}


async def run_command(
    command: str,
    *,
    cwd: str,
    env: Mapping[str, str] | Mapping[bytes, bytes] | None = None,
    variables: Mapping[str, str] | None = None,
    log_path: str | Path,
    timeout_s: float | None,
    kill_grace_s: float,
    log_max_bytes: int = 0,
    marked_by: Collection[str] = (),
) -> Outcome:
    """Run to the end (or the timeout) and describe what happened. The command's environment is env (None: this
    process's own) with variables added: the shell exports them before the command (see exports), unless that
    makes the line too long for Linux (or a value holds a newline), when they join env. The variables named in
    marked_by mark the command's processes: a timeout or a cancel also stops those that left its group (see
    terminate_group). Never raises for the command's faults; on cancellation the process group is terminated
    before CancelledError propagates. Raises ResourceShortage when the command could not be started for want of
    files, processes or memory (see _SHORTAGES)."""
    started_at = time.time()
    given = variables or {}
    if not given.keys() >= set(marked_by):  # fewer marks would match other commands' processes too
        raise ValueError(f"marked_by names variables not given: {sorted(set(marked_by) - given.keys())}")
    sink = LogSink(log_path, max_bytes=log_max_bytes)
    try:
        try:
            write_fd = sink.pipe()
            try:
                shell_line, env = _shell_line(command, env, given)
                proc = await asyncio.create_subprocess_shell(
                    shell_line,
                    stdin=devnull(),
                    stdout=write_fd,
                    stderr=subprocess.STDOUT,
                    cwd=cwd,
                    env=env,
                    start_new_session=True,  # the job leads its own process group: a timeout kills its whole tree
                )
            finally:
                os.close(write_fd)  # the command holds it now: the pipe ends when the command (and its children) do
        except (OSError, ValueError) as exc:
            if isinstance(exc, OSError) and exc.errno in _SHORTAGES:
                sink.close()
                raise ResourceShortage(exc.strerror or str(exc)) from None
            reason = _why_not_started(exc, cwd)
            sink.write(f"queuectl: {reason}\n".encode())
            sink.close()
            return Outcome(exit_code=None, error=reason, output_tail=reason, log_path=str(log_path),
                           started_at=started_at, finished_at=time.time())
        sink.attach()
        timed_out = await _wait(proc, timeout_s, kill_grace_s,
                                lambda: [os.fsencode(f"{name}={given[name]}") for name in marked_by])
    finally:
        tail = sink.finish()
    code = proc.returncode
    assert code is not None
    if timed_out:
        error: str | None = f"timed out after {timeout_s:g}s"
    else:
        error = None if code == 0 else describe_exit(code)
    return Outcome(exit_code=code, timed_out=timed_out, error=error, output_tail=tail, log_path=str(log_path),
                   started_at=started_at, finished_at=time.time())


def _shell_line(command: str, env: Mapping[str, str] | Mapping[bytes, bytes] | None, variables: Mapping[str, str]
                ) -> tuple[str, Mapping[str, str] | Mapping[bytes, bytes] | None]:
    """What /bin/sh -c runs, and with which environment."""
    exporting = exports.line(variables, command)
    if variables and exporting is not None and len(os.fsencode(exporting)) < _MAX_ARGUMENT_BYTES:
        return exporting, env
    if variables:
        env = {**{os.fsencode(k): os.fsencode(v) for k, v in (os.environb if env is None else env).items()},
               **{os.fsencode(k): os.fsencode(v) for k, v in variables.items()}}
    # /bin/sh -c CMD takes a CMD starting with "-" or "+" for options ("Illegal option", exit 2); after a space,
    # the shell looks it up as any other command: not found, exit 127, said so.
    return " " + command if command.startswith(("-", "+")) else command, env


def _why_not_started(exc: OSError | ValueError, cwd: str) -> str:
    if not isinstance(exc, OSError):  # a NUL byte, text that cannot be encoded: a row queuectl's checks did not write
        return f"cannot start: {exc}"
    if exc.filename == cwd:  # the command's chdir() failed (else /bin/sh, say, could not be run)
        return f"cannot start: working directory {cwd} " + {
            errno.ENOENT: "does not exist", errno.ENOTDIR: "is not a directory"}.get(
            exc.errno or 0, f"cannot be entered: {exc.strerror}")
    return f"cannot start: {exc.strerror or exc}"


async def _wait(proc: asyncio.subprocess.Process, timeout_s: float | None, kill_grace_s: float,
                marks: Callable[[], Collection[bytes]]) -> bool:
    """Wait for the command; True if it was timed out (and its group terminated). The marks are made only then."""
    try:
        await asyncio.wait_for(proc.wait(), timeout_s)
    except TimeoutError:
        await terminate_group(proc, kill_grace_s, marks())
        return True
    except asyncio.CancelledError:
        await terminate_group(proc, kill_grace_s, marks())
        raise
    return False
