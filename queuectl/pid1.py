"""`queuectl run` as a container's first process (pid 1, `CMD ["queuectl", "run"]`).

A process that outlives its parent is handed to pid 1 of its pid namespace, and pid 1 must reap it when it ends: a
daemon a job started, a command's child left behind when the command exited. The engine reaps only the commands it
started; as pid 1 it would collect the others as zombies until the container ran out of pids. So pid 1 forks: the
child runs the engine, and pid 1 stays as a minimal init (what `docker run --init` gives): it passes the stop signals
on to the engine, reaps every process handed to it, and exits as the engine did.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

#: What pid 1 passes on to the engine. A signal ignored from the start (`nohup`) stays ignored, in both.
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


def engine_not_pid1() -> None:
    """Return in the process that is to run the engine. Unless this is pid 1: then it forks, returns in the child,
    and the parent stays behind as the init described above, exiting when the engine does, with its status."""
    if os.getpid() != 1:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        engine = os.fork()  # before any thread is started: the caller runs this first
    except OSError as exc:  # out of processes or memory already: run the engine as pid 1, as before, and say so
        sys.stderr.write(f"queuectl: warning: running as pid 1 without an init to reap left-behind processes "
                         f"({exc.strerror})\n")
        return
    if engine == 0:
        _own_group()
        return
    def pass_on(received: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):  # the engine ended a moment ago: os.wait() below says so
            os.kill(engine, received)

    for sig in FORWARDED:
        if signal.getsignal(sig) != signal.SIG_IGN:
            signal.signal(sig, pass_on)
    while True:
        try:
            pid, status = os.wait()  # the engine's end, or any process handed to pid 1: reaped either way
        except ChildProcessError:  # no child at all: the engine is gone already
            os._exit(1)
        if pid == engine:
            code = os.waitstatus_to_exitcode(status)
            os._exit(code if code >= 0 else 128 - code)  # killed by signal N: 128 + N, as a shell reports it


def _own_group() -> None:
    """The engine leads a process group of its own and, on a terminal (`docker run -it`), the terminal's foreground
    one: Ctrl-C then reaches the engine once, from the terminal, instead of twice (the terminal's and pid 1's
    passed on), which made one Ctrl-C a fast stop. (What tini does.)"""
    os.setpgid(0, 0)
    with contextlib.suppress(OSError):  # no terminal: nothing to do
        if os.isatty(0):
            # Taking the terminal from the background would stop us with SIGTTOU: ignored for that one call.
            previous = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
            try:
                os.tcsetpgrp(0, os.getpgrp())
            finally:
                signal.signal(signal.SIGTTOU, previous)
