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

#: What pid 1 passes on to the engine: the engine's stop signals. Any other signal reaches pid 1 alone, which has no
#: handler for it, and the kernel drops it, as it did when the engine itself was pid 1. A signal ignored from the
#: start (`nohup`) stays ignored, in both.
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def engine_not_pid1() -> None:
    """Return in the process that is to run the engine. Unless this is pid 1: then it forks, returns in the child,
    and the parent stays behind as the init described above, exiting when the engine does, with its status."""
    if os.getpid() != 1:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    # Held back until pid 1 can pass them on: one that came in between would be dropped (pid 1 without a handler),
    # or SIGINT would end pid 1, and with it the engine.
    signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
    try:
        engine = os.fork()  # before any thread is started: the caller runs this first
    except OSError as exc:  # out of processes or memory already: run the engine as pid 1, as before, and say so
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
        sys.stderr.write(f"queuectl: warning: running as pid 1 without an init to reap left-behind processes "
                         f"({exc.strerror})\n")
        return
    if engine == 0:
        # A process group of its own: Ctrl-C on a terminal (`docker run -it`) goes to the foreground group, pid 1's,
        # and so reaches the engine once, passed on, not twice (that made one Ctrl-C a fast stop). Ctrl-Z and Ctrl-\
        # reach pid 1 alone, which drops them.
        os.setpgid(0, 0)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
        return

    def pass_on(received: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):  # the engine ended a moment ago: os.wait() below says so
            os.kill(engine, received)

    for sig in FORWARDED:
        if signal.getsignal(sig) != signal.SIG_IGN:
            signal.signal(sig, pass_on)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
    while True:
        try:
            pid, status = os.wait()  # the engine's end, or any process handed to pid 1: reaped either way
        except ChildProcessError:  # no child at all: the engine is gone already
            os._exit(1)
        if pid == engine:
            code = os.waitstatus_to_exitcode(status)
            os._exit(code if code >= 0 else 128 - code)  # killed by signal N: 128 + N, as a shell reports it
